#!/usr/bin/env bash
# The one-step probe grid benchmark of issue 29 (README, "Benchmarks"): the no-negative
# baseline plus the negative image at each single step of STEPS DDIM steps, SEEDS seeds, on
# the tiny random models, made by negimg (shared trajectories) and by
# ../shared/tools/diffusers_baseline.py --probe (each cell a whole pipeline call, as users
# run it; it loads the same unet/vae/image encoder/IP-Adapter files), in the same sitting on
# the same device. Generation time only on both sides: negimg's is the sum of records.csv's
# `seconds` over its distinct images (batch time / batch size, model loading excluded), the
# peer's its `grid_s` (it loads its models once, then times its loop of pipeline calls). Prints
# both, the ratio and the machine's load (`uptime`) before and after.
#   scripts/bench-probe.sh            (CPU, 25 steps, 1 seed, 64x64, fp32)
#   STEPS=10 SEEDS=2 SIZE=32 scripts/bench-probe.sh
#   PEER=/path/to/diffusers_baseline.py scripts/bench-probe.sh   (from a git worktree)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-${VIRTUAL_ENV:-.venv}/bin/python}
PEER=${PEER:-../shared/tools/diffusers_baseline.py}
STEPS=${STEPS:-25}
SEEDS=${SEEDS:-1}
SIZE=${SIZE:-64}
DEVICE=${DEVICE:-cpu}
NEGIMG=${NEGIMG:-target/release/negimg}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tiny="$root/models/tiny"
last=$((STEPS - 1))
cat > "$work/probe.toml" <<TOML
[experiment]
name = "bench-probe"
description = "Benchmark: a one-step probe grid with its baseline."

[models]
pipeline = "$tiny/pipeline"
ip_adapter = { base = "$tiny/ip-adapter_sd15.safetensors" }
image_encoder = "$tiny/image_encoder"
init_random = { preset = "tiny", dir = "$tiny" }

[images.house]
generate = { prompt = "a house with a green lawn", seed = 1 }

[images.lawn]
generate = { prompt = "a green lawn", seed = 2 }

[defaults]
steps = $STEPS
scheduler = "ddim"
size = $SIZE
dtype = "fp32"
seeds = { count = $SEEDS, base = 1000 }
positive_image = "house"
negative_image = "lawn"
neg_off = "no_image"

[grid]
negative = ["none", "image"]
neg_steps_at = "each 0-$last"
TOML
load_before=$(uptime)
"$NEGIMG" run "$work/probe.toml" --results "$work/results" --device "$DEVICE" --no-report >&2
records=$(ls "$work"/results/*/*/records.csv | head -1)
negimg_s=$("$PY" - "$records" <<'PYEOF'
import csv, sys
seen, total = set(), 0.0
for r in csv.DictReader(open(sys.argv[1])):
    if r["status"] == "done" and r["file"] not in seen:
        seen.add(r["file"]); total += float(r["seconds"])
print(f"{total:.3f} {len(seen)}")
PYEOF
)
peer=$("$PY" "$PEER" --probe --steps "$STEPS" --batch "$SEEDS" --size "$SIZE" --device "$DEVICE" \
    --dtype fp32 --unet "$tiny/pipeline/unet" --vae "$tiny/pipeline/vae" \
    --image-encoder "$tiny/image_encoder" --ip-adapter "$tiny/ip-adapter_sd15.safetensors" \
    2>"$work/peer.log" | tail -1) || { cat "$work/peer.log" >&2; exit 1; }
peer_s=$(echo "$peer" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["grid_s"])')
set -- $negimg_s
echo "probe grid: $STEPS DDIM steps, $SEEDS seeds, ${SIZE}x${SIZE}, fp32, $DEVICE"
echo "negimg:    $1 s for $2 distinct images (shared trajectories)"
echo "diffusers: $peer_s s ($peer)"
"$PY" -c "print(f'ratio (diffusers / negimg): {$peer_s / $1:.2f}x')"
echo "load before: $load_before"
echo "load after:  $(uptime)"
