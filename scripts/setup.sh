#!/usr/bin/env bash
# Idempotent: creates .venv and installs requirements.txt; a no-op when the stamp matches.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp=$venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  python3 -m venv "$venv"
fi
echo "setup: installing requirements.txt into $venv (torch is large: first time takes minutes)"
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt
echo "$want" > "$stamp"
