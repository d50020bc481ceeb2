#!/usr/bin/env bash
# Installs the local venv (.venv, same as the tests use) and runs the main job: text -> speech.
# Without arguments it speaks with the tiny random test model (noise-like "speech", but the full
# pipeline runs); give a real model folder to hear real speech:
#     bash tools/demo.sh [MODEL_DIR] [extra python -m qwen_tts_core args]
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
MODEL=${1:-tests/fixtures/models/qwen-tts/Tiny-CustomVoice}
shift || true
mkdir -p out
"$PY" -m qwen_tts_core "$MODEL" --text "Hello! This is Qwen3-TTS running in our own exact implementation." \
    --out out/demo.wav "$@"
