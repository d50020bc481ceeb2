"""Everything the nodes need from ComfyUI itself, in one place: model folders (`folder_paths`,
including extra_model_paths.yaml), devices and offloading (`comfy.model_management` with a
`ModelPatcher` around our plain torch modules), the progress bar and the interrupt check."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
from qwen_tts_core import speech_codes
from qwen_tts_core.api import QwenTTS, resolve_dtype
from qwen_tts_core.duration import FRAME_RATE
from qwen_tts_core.errors import InputError, ModelFolderError
from qwen_tts_core.voice import list_voices, voice_path

log = logging.getLogger("qwen_tts_nodes")

MODELS = "qwen-tts"              # models/qwen-tts/<checkpoint folder>/
VOICES = "qwen-tts-voices"       # models/qwen-tts-voices/<name>.safetensors

# Hugging Face repositories of the released checkpoints (folder name = repository name)
CHECKPOINTS = {
    "Qwen3-TTS-12Hz-1.7B-CustomVoice": "built-in speakers with style instructions",
    "Qwen3-TTS-12Hz-0.6B-CustomVoice": "built-in speakers, smaller",
    "Qwen3-TTS-12Hz-1.7B-VoiceDesign": "a voice from a description",
    "Qwen3-TTS-12Hz-1.7B-Base": "voice cloning",
    "Qwen3-TTS-12Hz-0.6B-Base": "voice cloning, smaller",
    "Qwen3-TTS-Tokenizer-12Hz": "the speech tokenizer alone",
}


def register_folders() -> None:
    """Adds models/qwen-tts and models/qwen-tts-voices (paths from extra_model_paths.yaml, read by
    ComfyUI before packs load, stay and come first)."""
    for name, exts in ((MODELS, set()), (VOICES, {".safetensors"})):
        default = os.path.join(folder_paths.models_dir, name)
        folder_paths.add_model_folder_path(name, default)
        paths, old_exts = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(old_exts) | exts)


def model_roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(MODELS)]


def voice_roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(VOICES)]


def list_model_folders(kind: str = "any") -> list[str]:
    """Folder names under models/qwen-tts that hold a config.json (one level, or two for
    `org/name` layouts). kind "model": TTS checkpoints only; "any": also the standalone speech
    tokenizer (every model folder holds a tokenizer too)."""
    names = []
    for root in model_roots():
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if sub.name.startswith("."):     # e.g. a training epoch still being written
                continue
            for folder in [sub] + (sorted(sub.iterdir()) if sub.is_dir() and not (sub / "config.json").exists() else []):
                if folder.is_dir() and (folder / "config.json").is_file():
                    if kind == "model" and _looks_like_tokenizer(folder):
                        continue
                    names.append(folder.relative_to(root).as_posix())
    return sorted(dict.fromkeys(names), key=str.lower)


def _looks_like_tokenizer(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") \
            == speech_codes.TOKENIZER_MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def download_hint(name: str, root: Path) -> str:
    repo = name if name in CHECKPOINTS else "Qwen3-TTS-12Hz-1.7B-CustomVoice"
    return (f"hf download Qwen/{repo} --local-dir \"{root / repo}\"  (or: huggingface-cli download "
            f"Qwen/{repo} --local-dir ...)")


def find_model_folder(name: str, what: str = "model") -> Path:
    """The folder of `name` under models/qwen-tts; a missing one gives a message that says which
    checkpoint to download and where to put it."""
    roots = model_roots()
    if not isinstance(name, str) or not name.strip():
        name = ""
    parts = Path(name).parts
    if name and (Path(name).is_absolute() or ".." in parts):
        raise InputError(f"Invalid {what} folder name {name!r}; pick a folder under models/{MODELS}/.")
    for root in roots:
        folder = root / name
        if name and (folder / "config.json").is_file():
            return folder
    where = ", ".join(str(r) for r in roots) or f"models/{MODELS}"
    found = list_model_folders()
    first = roots[0] if roots else Path("models") / MODELS
    if not found:
        listing = "There are no Qwen3-TTS folders there yet."
    else:
        listing = f"Folders found: {', '.join(found)}."
    wanted = f"'{name}' " if name else ""
    raise ModelFolderError(
        f"Qwen3-TTS {what} folder {wanted}not found in {where}. {listing} Download the checkpoint "
        f"into its own folder there, e.g.: {download_hint(name, first)}. Checkpoints: "
        + "; ".join(f"{k} ({v})" for k, v in CHECKPOINTS.items())
        + ". Then refresh the browser (R) and pick it in the loader.")


def find_voice_file(name: str) -> Path:
    roots = voice_roots()
    for root in roots:
        path = voice_path(root, name)
        if path.is_file():
            return path
    have = all_voices()
    where = ", ".join(str(r) for r in roots)
    raise InputError(f"No saved voice named {name!r} in {where}. "
                     + (f"Saved voices: {', '.join(have)}." if have else
                        "No voices saved yet: make one with 'Make Voice from Reference Audio' and 'Save Voice'."))


def all_voices() -> list[str]:
    return sorted({v for r in voice_roots() for v in list_voices(r)}, key=str.lower)


def voice_save_folder() -> Path:
    return voice_roots()[0]


# --------------------------------------------------------------------------- devices, offloading
def devices(choice: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for the loader's device option."""
    cpu = torch.device("cpu")
    if choice == "auto":
        load = mm.get_torch_device()
        return load, (cpu if load.type == "cpu" else mm.unet_offload_device())
    if choice == "cpu":
        return cpu, cpu
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device 'cuda' was chosen but this machine has no usable CUDA GPU "
                             "(or ComfyUI runs with --cpu). Choose 'auto' or 'cpu'.")
        return torch.device("cuda", torch.cuda.current_device()), cpu
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was chosen but Apple Metal is not available here. "
                             "Choose 'auto' or 'cpu'.")
        return torch.device("mps"), cpu
    raise InputError(f"Unknown device {choice!r}; use auto, cuda, cpu or mps.")


class QwenTTSWeights(torch.nn.Module):
    """Container that lets ComfyUI's ModelPatcher move a group of our modules as one model."""

    def __init__(self, **modules):
        super().__init__()
        for k, v in modules.items():
            self.add_module(k, v)


def patcher(module: torch.nn.Module, load: torch.device, offload: torch.device):
    return comfy.model_patcher.ModelPatcher(QwenTTSWeights(weights=module), load_device=load, offload_device=offload)


def load_to_device(patchers: list, memory_required: int = 0) -> None:
    """Moves the models onto their load device, offloading other models if needed. Fully: our
    modules are plain torch modules that cannot run partly offloaded."""
    patchers = [p for p in patchers if p is not None]
    if patchers:
        mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)


@dataclass
class TokenizerHandle:
    """What flows through QWEN_TTS_TOKENIZER wires."""
    tokenizer: object
    patcher: object
    name: str

    def ready(self):
        load_to_device([self.patcher])
        speech_codes.follow_modules(self.tokenizer)
        return self.tokenizer


@dataclass
class ModelHandle:
    """What flows through QWEN_TTS_MODEL wires: the loaded model and its ModelPatchers (the
    talker and speaker encoder in one, the speech tokenizer in the other)."""
    tts: QwenTTS
    patcher: object
    codec_patcher: object
    name: str

    @property
    def model_type(self) -> str:
        return self.tts.model_type

    def describe(self) -> str:
        t = self.tts
        extra = f"; speakers: {', '.join(t.speakers)}" if t.speakers else ""
        return (f"{self.name}: Qwen3-TTS {t.config.size_label} {t.model_type}, {t.dtype} on "
                f"{self.patcher.load_device}{extra}")

    def tokenizer(self) -> TokenizerHandle:
        return TokenizerHandle(self.tts.codec, self.codec_patcher, f"{self.name}/speech_tokenizer")

    def ready(self, with_codec: bool = True, batch: int = 1, frames: int = 2048) -> QwenTTS:
        load_to_device([self.patcher] + ([self.codec_patcher] if with_codec else []),
                       self.memory_estimate(batch, frames))
        if with_codec and self.tts.codec is not None:
            speech_codes.follow_modules(self.tts.codec)
        return self.tts

    def memory_estimate(self, batch: int, frames: int) -> int:
        """Bytes of the talker's KV caches for `batch` items of ~`frames` positions."""
        c = self.tts.config.talker
        per_position = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim
        return int(batch * (frames + 512) * per_position * self.tts.dtype.itemsize)


def load_model(name: str, dtype: str, device: str) -> ModelHandle:
    folder = find_model_folder(name)
    load, offload = devices(device)
    dt = resolve_dtype(dtype, load)
    tts = QwenTTS.from_pretrained(folder, dtype=dt, device=offload, speech_tokenizer=True)
    codec = speech_codes.modules(tts.codec)
    handle = ModelHandle(tts, patcher(tts.model, load, offload), patcher(codec, load, offload), name)
    log.info("Loaded %s", handle.describe())
    return handle


def load_tokenizer(name: str, dtype: str, device: str) -> TokenizerHandle:
    folder = find_model_folder(name, "speech tokenizer")
    load, offload = devices(device)
    dt = resolve_dtype(dtype, load)
    tok = speech_codes.load_speech_tokenizer(folder, dtype=dt, device=offload)
    return TokenizerHandle(tok, patcher(speech_codes.modules(tok), load, offload), name)


# --------------------------------------------------------------------------- progress, interrupt
class FrameProgress:
    """A ComfyUI progress bar over generated frames whose callback also stops the generation
    within one frame when the user interrupts the prompt."""

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)
        self.total = 1

    def on_start(self, max_frames: int) -> None:
        self.total = max(1, int(max_frames))
        self.bar.update_absolute(0, self.total)

    def on_frame(self, index: int, frame) -> None:
        stop_if_interrupted()
        self.bar.update_absolute(index + 1, self.total)


class ChunkProgress:
    """A ComfyUI progress bar over the chunks (narration) or lines (subtitles, script) of a
    long-form node, as the core's `on_progress`; its `on_frame`, given to every speaker, stops
    the generation within one frame when the user interrupts the prompt."""

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)

    def __call__(self, progress) -> None:
        self.bar.update_absolute(progress.done, max(progress.total, 1))

    def on_frame(self, index: int, frame) -> None:
        stop_if_interrupted()


def stop_if_interrupted() -> None:
    """Raises ComfyUI's interrupt if the user has cancelled the prompt."""
    mm.throw_exception_if_processing_interrupted()


def run_interruptible(fn):
    """Runs fn(); on interrupt, drops the generation's tensors before re-raising ComfyUI's
    interrupt (the exception's traceback would otherwise keep the KV caches alive)."""
    interrupted = False
    try:
        return fn()
    except mm.InterruptProcessingException:
        interrupted = True
    if interrupted:
        mm.soft_empty_cache()
        raise mm.InterruptProcessingException()


def seconds_to_frames(seconds: float) -> int | None:
    """max length in seconds (0 = auto from the text) -> frame limit for the core."""
    if seconds is None or seconds <= 0:
        return None
    return max(1, math.ceil(float(seconds) * FRAME_RATE))


# --------------------------------------------------------------------------- training
class StepProgress:
    """A ComfyUI progress bar over the steps of a long job (speech codes, then training steps),
    with a line of text under the node (e.g. the loss) where this ComfyUI can show one.
    `should_stop` is the interrupt check the core asks after every step."""

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)

    def update(self, done: int, total: int, text: str | None = None) -> None:
        self.bar.update_absolute(done, max(int(total), 1))
        if text:
            show_text(text)

    def should_stop(self) -> bool:
        stop_if_interrupted()
        return False


def show_text(text: str) -> None:
    """Text under the running node (ComfyUI's progress text; older versions have none)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = PromptServer.instance
    node = getattr(server, "last_node_id", None)
    if server is not None and node is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, node)


def free_memory(bytes_needed: int, device: torch.device) -> None:
    """Asks ComfyUI to offload other models until `bytes_needed` are free on `device`."""
    if device.type != "cpu":
        mm.free_memory(bytes_needed, device)
