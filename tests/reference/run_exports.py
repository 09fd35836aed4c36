"""Runs exported negimg scripts one after another in this one Python process (diffusers is
imported once), each as `python SCRIPT --out OUT --threads 1` would run it. A script that
fails is reported (its name and traceback on stderr) and the others still run; the exit
status is 1 if any failed.

usage: run_exports.py SCRIPT OUT.png [SCRIPT OUT.png ...]
"""
import runpy, sys, traceback

pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))
failed = []
for script, out in pairs:
    sys.argv = [script, "--out", out, "--threads", "1"]
    try:
        runpy.run_path(script, run_name="__main__")
    except BaseException:  # a script's SystemExit included
        failed.append(script)
        print(f"FAILED {script}:\n{traceback.format_exc()}", file=sys.stderr)
sys.exit(1 if failed else 0)
