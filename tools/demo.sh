#!/usr/bin/env bash
# Installs the local venv (.venv, same as the tests use) and runs the main job: text -> speech.
# Without arguments it speaks with the tiny random test model (noise-like "speech", but the full
# pipeline runs); give a real model folder to hear real speech:
#     bash tools/demo.sh [MODEL_DIR] [extra python -m qwen_tts_core args]
# It prints what a user needs (the steps, the result and where it is); pip's own messages go to
# out/demo-install.log, shown only when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-tests/fixtures/models/qwen-tts/Tiny-CustomVoice}
shift || true
mkdir -p out
LOG=out/demo-install.log
VENV=${QWEN_TTS_VENV:-.venv}

echo "Qwen3-TTS demo"
echo "[1/2] Python environment in $VENV: installing or checking (the first run downloads torch and"
printf "      the libraries, a few GB: several minutes) "
started=$SECONDS
( while sleep 15; do printf "."; done ) &
dots=$!
set +e
# the demo needs no transformers-4.57 overlay (that is for tools/test.sh's second pass)
( set -e; QWEN_TTS_SKIP_457=1 source tools/env.sh ) > "$LOG" 2>&1
rc=$?
set -e
kill "$dots" 2>/dev/null || true
wait "$dots" 2>/dev/null || true
if [ $rc -ne 0 ]; then
    echo " FAILED"
    echo "---- the installer's last messages (all of them in $LOG) ----"
    tail -n 40 "$LOG"
    echo "----"
    echo "tools/demo.sh: setting up $VENV failed (exit status $rc). Check the messages above: a network" \
         "problem, a full disk, or Python without venv support (sudo apt-get install python3-venv)." >&2
    exit 1
fi
echo " ready ($((SECONDS - started)) s)"

if [ "$MODEL" = tests/fixtures/models/qwen-tts/Tiny-CustomVoice ]; then
    echo "[2/2] Speaking a sentence with the tiny random test model (it sounds like noise: give a real"
    echo "      model folder to hear speech, see README 'Set up in two commands')..."
else
    echo "[2/2] Speaking a sentence with $MODEL..."
fi
"$VENV/bin/python" -m qwen_tts_core "$MODEL" \
    --text "Hello! This is Qwen3-TTS running in our own exact implementation." --out out/demo.wav "$@"
echo "Done: $(pwd)/out/demo.wav"
