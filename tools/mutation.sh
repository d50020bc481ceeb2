#!/usr/bin/env bash
# Mutation testing (mutmut 3), one module at a time; not part of CI (it takes long). Uses the
# test venv (tools/test.sh makes it) with mutmut installed beside it, not into it: a `pip
# --target` folder put on PYTHONPATH ($MUTMUT_DIR, default $VENV/mutmut).
#     bash tools/mutation.sh sampling speech_codes voice      # or: longform, nodes, --list
# Results: out/mutation/<module>/ (summary.json, survivors.txt with each surviving mutant's diff,
# mutmut-run.log); `cd out/mutation/<module> && PYTHONPATH=$MUTMUT_DIR $VENV/bin/python -m mutmut
# browse` to look through them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath -m "${QWEN_TTS_VENV:-.venv}")      # absolute: mutmut runs inside out/mutation/<module>
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "tools/mutation.sh: no test venv at $VENV; run tools/test.sh once first (or set QWEN_TTS_VENV)" >&2
    exit 1
fi
MUTMUT_DIR=$(realpath -m "${MUTMUT_DIR:-$VENV/mutmut}")
MUTMUT_VERSION="3.8.1"
if ! PYTHONPATH="$MUTMUT_DIR" "$PY" -c "import mutmut, sys; sys.exit(mutmut.__version__ != '$MUTMUT_VERSION')" 2>/dev/null; then
    rm -rf "$MUTMUT_DIR"
    "$PY" -m pip install -q --disable-pip-version-check --target "$MUTMUT_DIR" "mutmut==$MUTMUT_VERSION"
fi
PYTHONPATH="$MUTMUT_DIR${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" tools/mutation.py "$@"
