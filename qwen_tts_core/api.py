"""Public API: load a Qwen3-TTS folder, build voices, generate codes (and audio).

    tts = QwenTTS.from_pretrained("models/qwen-tts/Qwen3-TTS-12Hz-1.7B-CustomVoice")
    out = tts.generate_custom_voice("Hello!", speaker="Vivian", language="English", seed=1)
    out.codes[0]   # [frames, 16] int64
"""
from __future__ import annotations

import logging
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from . import audio as audio_io
from . import speech_codes
from .checkpoint import load_into, load_text_tokenizer, weight_files
from .config import GenerationDefaults, ModelConfig, read_json
from .duration import FRAME_RATE, max_frames_for  # noqa: F401  (FRAME_RATE is part of the API)
from .errors import (DeviceError, InputError, ModelFolderError, OutOfMemory, UnsupportedModeError, device_lost,
                     first_line)
from .generate import (FrameLoop, Frames, FrameStep, GraphedStep, StepBuckets, cache_bucket,
                       collate, collect, item_keys, random_seed, step_bytes, weights_key)
from .longform.languages import unsupported_script_note
from .text import check_text
from .prompt import PromptBuilder, Request, TalkerPrompt, VoicePrompt
from .sampling import Sampling
from .speaker import LogMel, SpeakerEncoder
from .talker import Qwen3TTS

log = logging.getLogger("qwen_tts_core")

MAX_TEXT_TOKENS = 4096       # one generation; longer texts go through the long-form splitter


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda, else mps, else cpu. A named device is checked: it must exist and take a
    tensor (a GPU held by another program in exclusive mode, or whose driver fails, does not)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return probe_device(torch.device("cuda"))
        if _mps_available():
            return probe_device(torch.device("mps"))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"Unknown device {device!r} ({e}); use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"Device {device!r} was chosen but this machine has no usable CUDA GPU "
                              "(no NVIDIA GPU, or a CPU-only torch). Choose auto or cpu.")
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"Device {device!r} does not exist: this machine has {count} CUDA "
                              f"GPU(s), cuda:0..cuda:{count - 1}. Choose one of those, or auto.")
    elif dev.type == "mps" and not _mps_available():
        raise DeviceError(f"Device {device!r} was chosen but Apple Metal (MPS) is not available here. "
                          "Choose auto or cpu.")
    return probe_device(dev) if dev.type != "cpu" else dev


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def probe_device(device: torch.device) -> torch.device:
    """Puts one tiny tensor on `device`: a device that is busy (exclusive-process mode, taken by
    another program) or broken says so here, clearly, instead of in the middle of loading."""
    try:
        torch.ones(1, device=device).add_(1)
    except RuntimeError as e:
        raise DeviceError(f"Device {device} cannot be used right now ({first_line(e)}). It may be busy with "
                          "another program or its driver may have failed: close that program, or "
                          "choose another device (cpu works everywhere).") from None
    return device


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


FP16_UNRELIABLE = ("GTX 1630", "GTX 1650", "GTX 1660")  # Turing without tensor cores: fp16 NaNs (as ComfyUI)


def bf16_emulated(device: torch.device) -> bool:
    """True on CUDA GPUs below compute capability 8.0 (before Ampere), which run bf16 only by
    emulation (slowly)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8


def auto_dtype(device: torch.device) -> tuple[torch.dtype, str]:
    """The precision "auto" picks for `device`, and why (the loader's info line says it).

    bf16 where the GPU computes it natively: CUDA compute capability >= 8.0 (Ampere and newer;
    `torch.cuda.is_bf16_supported()` also counts emulation on older GPUs, so it is not asked).
    fp16 on Volta/Turing GPUs (7.x) and Apple MPS, where it is native: the model's own
    arithmetic keeps norms, softmax and sampling in fp32, and every frame is checked for
    overflow, which stops generation with a message instead of garbage. fp32 elsewhere: the
    CPU (half precision is no faster there and the speech decoder ~60x slower), Pascal and
    older GPUs (slow half precision), GTX 16xx (unreliable fp16)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        gpu = f"{name}, compute capability {major}.{minor}"
        if not bf16_emulated(device):
            return torch.bfloat16, f"bf16: native on this GPU ({gpu})"
        if major == 7 and not any(n in name for n in FP16_UNRELIABLE):
            return torch.float16, f"fp16: this GPU ({gpu}) has no native bf16"
        return torch.float32, f"fp32: this GPU ({gpu}) has neither native bf16 nor reliable fast fp16"
    if device.type == "mps":
        return torch.float16, "fp16: native on Apple MPS (bf16 is not on every Mac)"
    return torch.float32, f"fp32: half precision is not faster on {device.type}"


def choose_dtype(dtype: str | torch.dtype, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) for a dtype name (auto, bf16, fp16, fp32) or torch dtype on `device`. An
    explicit half precision the device cannot compute in is refused with what to pick instead."""
    if isinstance(dtype, torch.dtype):
        chosen, why = dtype, "as given"
    elif dtype in DTYPES:
        chosen, why = DTYPES[dtype], "as chosen"
    elif dtype == "auto":
        return auto_dtype(device)
    else:
        raise InputError(f"Unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32.")
    if chosen not in (torch.float32, torch.bfloat16, torch.float16):
        raise InputError(f"dtype {chosen} is not supported; use auto, bf16, fp16 or fp32.")
    if chosen != torch.float32:
        check_dtype_runs(chosen, device)
    if chosen == torch.bfloat16 and bf16_emulated(device):
        why += "; bf16 is emulated on this GPU (slow): auto would pick fp16"
        log.warning("bf16 is emulated on %s (compute capability < 8.0) and runs slowly; dtype auto "
                    "picks fp16 there.", torch.cuda.get_device_name(device))
    return chosen, why


def check_dtype_runs(dtype: torch.dtype, device: torch.device) -> None:
    """Runs the model's kinds of op (matmul, softmax attention, embedding lookup) once, tiny, in
    `dtype` on `device`: a device without that precision fails here with a clear message."""
    name = str(dtype).replace("torch.", "")
    try:
        x = torch.ones(1, 2, 4, 8, dtype=dtype, device=device)
        torch.nn.functional.scaled_dot_product_attention(x, x, x)
        (x[0, 0] @ x[0, 0].T).softmax(-1)
        torch.nn.functional.embedding(torch.zeros(1, dtype=torch.long, device=device), x[0, 0])
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"{device} cannot compute in {name} ({first_line(e)}). Choose dtype auto "
                          "(it picks what this device supports) or fp32.") from None


def decoder_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Precision of the speech decoder that runs on `device` for a model in `dtype`: fp32 on the
    CPU (its convolutions run ~60x slower in half precision there), else the model's."""
    return torch.float32 if torch.device(device).type == "cpu" else dtype


def load_model(config: ModelConfig, files: dict, dtype: torch.dtype, device: torch.device) -> Qwen3TTS:
    """Builds the modules on the meta device and assigns the checkpoint tensors, already in
    `dtype` on `device`: no fp32 copy of the model is ever made. The rotary tables (built on
    the CPU) then follow in `dtype` to `device`."""
    with torch.device("meta"):
        speaker = SpeakerEncoder(config.speaker_encoder) if config.speaker_encoder else None
        model = Qwen3TTS(config.talker, speaker)
    load_into(model, files, dtype, device, what=f"Qwen3-TTS {config.tts_model_type}")
    return model.to(device=device, dtype=dtype)


@dataclass
class AudioChunk:
    item: int                                 # index of the item in the batch
    audio: torch.Tensor                       # [samples] float32 at 24 kHz
    final: bool                               # the item's last chunk


@dataclass
class GenerationResult:
    codes: list[torch.Tensor]                 # per item [frames, 16] int64 (cpu)
    stopped: list[bool]                       # ended with end-of-speech (not the frame limit)
    warnings: list[str] = field(default_factory=list)
    audio: list[torch.Tensor] | None = None   # per item [samples] float32 at 24 kHz
    sample_rate: int = 24000
    ran: str = ""                             # which step ran the frames (CUDA graph or eager, and why)
    replayed: int = 0                         # frames that replayed a CUDA graph

    @property
    def cuda_graph(self) -> bool:
        """Whether the frames replayed a CUDA graph (not only whether graphs were asked for)."""
        return self.replayed > 0


class QwenTTS:
    def __init__(self, folder: Path, config: ModelConfig, model: Qwen3TTS, tokenizer,
                 defaults: GenerationDefaults, codec=None, cuda_graphs: bool = True,
                 dtype_reason: str = ""):
        self.folder, self.config, self.model = folder, config, model
        self.tokenizer, self.defaults, self.codec = tokenizer, defaults, codec
        self.prompts = PromptBuilder(model.talker, config, tokenizer)
        self._log_mel = LogMel(config.speaker_encoder.sample_rate) if config.speaker_encoder else None
        self.cuda_graphs = cuda_graphs     # default of generate(): the fast path on CUDA devices
        self.dtype_reason = dtype_reason   # why this precision (dtype auto says what it found)
        self.steps = StepBuckets()         # static steps / CUDA graphs kept between generations

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | torch.dtype = "auto",
                        device: str | torch.device = "auto", speech_tokenizer: bool = True,
                        cuda_graphs: bool = True, codec_dtype: torch.dtype | None = None) -> "QwenTTS":
        """dtype: auto (see `auto_dtype`), bf16, fp16, fp32; device: auto (cuda, else mps, else
        cpu), cpu, cuda, cuda:N, mps. cuda_graphs: replay each frame as one CUDA graph on CUDA
        devices (the fast path; the same codes as without in fp32; off: the eager step).
        codec_dtype: the speech decoder's precision (default `decoder_dtype` on `device`; a
        caller that loads on one device to run on another, as ComfyUI does, gives it for the
        device it will run on)."""
        folder = Path(path)
        if not folder.is_dir():
            raise ModelFolderError(
                f"Model folder not found: {folder}. Download a Qwen3-TTS checkpoint (e.g. "
                "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice from Hugging Face) into that folder.")
        config = ModelConfig.from_dict(read_json(folder / "config.json"), str(folder / "config.json"))
        files = weight_files(folder)
        dev = resolve_device(device)
        dt, dtype_reason = choose_dtype(dtype, dev)
        # everything that can fail fast is checked before the (multi-GB) talker weights load
        codec_folder = None
        if speech_tokenizer:
            from .codec import SpeechTokenizer
            from .codec.tokenizer import tokenizer_folder

            codec_folder = tokenizer_folder(folder)
        tokenizer = load_text_tokenizer(folder)
        defaults = GenerationDefaults.from_file(folder / "generation_config.json")
        model = load_model(config, files, dt, dev)
        codec = None
        if codec_folder is not None:
            codec = SpeechTokenizer.from_pretrained(codec_folder, dtype=codec_dtype or decoder_dtype(dt, dev),
                                                    device=dev)
        return cls(folder, config, model, tokenizer, defaults, codec, cuda_graphs, dtype_reason)

    # ------------------------------------------------------------------ facts
    @property
    def model_type(self) -> str:
        return self.config.tts_model_type

    @property
    def speakers(self) -> list[str]:
        return self.config.speakers

    @property
    def languages(self) -> list[str]:
        return self.config.languages

    @property
    def device(self) -> torch.device:
        return self.model.talker.codec_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.talker.codec_head.weight.dtype

    def default_sampling(self) -> tuple[Sampling, Sampling]:
        d = self.defaults
        return (Sampling(d.do_sample, d.temperature, d.top_k, d.top_p, d.repetition_penalty),
                Sampling(d.subtalker_dosample, d.subtalker_temperature, d.subtalker_top_k, d.subtalker_top_p))

    # ------------------------------------------------------------------ voices
    def _require(self, kind: str, action: str) -> None:
        if self.model_type != kind:
            names = {"base": "a Base model (e.g. Qwen3-TTS-12Hz-1.7B-Base)",
                     "custom_voice": "a CustomVoice model (e.g. Qwen3-TTS-12Hz-1.7B-CustomVoice)",
                     "voice_design": "the VoiceDesign model (Qwen3-TTS-12Hz-1.7B-VoiceDesign)"}
            raise UnsupportedModeError(
                f"{action} needs {names[kind]}; the loaded model {self.folder.name} is a "
                f"{self.model_type} model.")

    @torch.inference_mode()
    def speaker_embedding(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """x-vector of a reference clip -> [D] float32 (cpu)."""
        self._require("base", "Voice cloning")
        return self._xvector(audio_io.prepare_reference(waveform, sample_rate))

    def _xvector(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self._log_mel(wav[None])                                      # [1, frames, 128] fp32
        return self.model.speaker_encoder(mel.to(self.device, self.dtype))[0].float().cpu()

    @torch.inference_mode()
    def create_voice_clone_prompt(self, waveform: torch.Tensor, sample_rate: int,
                                  ref_text: str | None = None, x_vector_only: bool = False) -> VoicePrompt:
        """A reusable cloned voice from reference audio. In-context mode (default) also encodes
        the reference to codes and needs its transcript; x-vector-only mode needs neither."""
        self._require("base", "Voice cloning")
        ref_text = (ref_text or "").strip()
        if not x_vector_only and not ref_text:
            raise InputError("In-context voice cloning needs the transcript of the reference audio "
                             "(ref_text). Type what is said in the clip, or use x-vector-only mode.")
        wav = audio_io.prepare_reference(waveform, sample_rate)
        embedding = self._xvector(wav)
        if x_vector_only:
            return VoicePrompt(embedding)
        codes, lengths = self.codec.encode([wav], [audio_io.MODEL_RATE])
        return VoicePrompt(embedding, codes[0, :, :lengths[0]].t().contiguous().cpu(), ref_text)

    # ------------------------------------------------------------------ generation
    def check(self, req: Request) -> Request:
        text = check_text(req.text)
        language = (req.language or "auto").strip().lower()
        if language not in self.languages:
            raise InputError(f"Unsupported language {req.language!r}. Choose one of: "
                             f"{', '.join(self.languages)}.")
        speaker = req.speaker.strip().lower() if req.speaker else None
        if speaker and speaker not in self.config.talker.spk_id:
            raise InputError(f"Unknown speaker {req.speaker!r}. This model has: "
                             f"{', '.join(self.speakers) or 'no built-in speakers'}.")
        instruct = req.instruct.strip() if req.instruct else None
        return replace(req, text=text, language=language, speaker=speaker, instruct=instruct or None)

    @staticmethod
    def text_notes(texts: Sequence[str]) -> list[str]:
        """Notes (not errors) on the texts of a call: text in a script none of the model's
        languages use (e.g. Arabic) is generated, but the user is told what to expect."""
        notes = [(i, unsupported_script_note(t)) for i, t in enumerate(texts) if isinstance(t, str)]
        return [f"Text {i + 1}: {n}" if len(texts) > 1 else n for i, n in notes if n]

    def generate_custom_voice(self, text: str | Sequence[str], speaker: str | Sequence[str],
                              language: str | Sequence[str] = "auto",
                              instruct: str | Sequence[str | None] | None = None,
                              non_streaming_text: bool = True, **options) -> GenerationResult:
        """Built-in speakers (CustomVoice models), with an optional style instruction."""
        self._require("custom_voice", "Custom voice")
        texts = _as_list(text)
        warnings = self.text_notes(texts)
        if self.config.tts_model_size == "0b6" and any(_broadcast(instruct, len(texts))):
            warnings.append("The 0.6B CustomVoice model does not follow instructions; the "
                            "instruction was ignored. Use the 1.7B model for style control.")
            instruct = None
        reqs = [Request(t, l, s, i, None, non_streaming_text) for t, l, s, i in zip(
            texts, _broadcast(language, len(texts)), _broadcast(speaker, len(texts)),
            _broadcast(instruct, len(texts)))]
        for r in reqs:
            if not r.speaker:
                raise InputError(f"Choose a speaker: {', '.join(self.speakers)}.")
        return self.generate(reqs, warnings=warnings, **options)

    def generate_voice_design(self, text: str | Sequence[str], instruct: str | Sequence[str],
                              language: str | Sequence[str] = "auto", non_streaming_text: bool = True,
                              **options) -> GenerationResult:
        """A new voice from a natural-language description (VoiceDesign model)."""
        self._require("voice_design", "Voice design")
        texts = _as_list(text)
        reqs = [Request(t, l, None, i, None, non_streaming_text) for t, l, i in zip(
            texts, _broadcast(language, len(texts)), _broadcast(instruct, len(texts)))]
        return self.generate(reqs, warnings=self.text_notes(texts), **options)

    def generate_voice_clone(self, text: str | Sequence[str], voice: VoicePrompt | Sequence[VoicePrompt],
                             language: str | Sequence[str] = "auto", non_streaming_text: bool = False,
                             **options) -> GenerationResult:
        """Speech in a cloned voice (Base models); `voice` from create_voice_clone_prompt."""
        self._require("base", "Voice cloning")
        texts = _as_list(text)
        voices = _broadcast(voice, len(texts))
        for v in voices:
            if not isinstance(v, VoicePrompt):
                raise InputError("Voice cloning needs a voice made by create_voice_clone_prompt.")
            if v.speaker_embedding is None:
                raise InputError("This voice has no speaker embedding (it carries a designed voice "
                                 "between long-form chunks); clone from reference audio instead.")
            if v.speaker_embedding.numel() != self.config.talker.hidden_size:
                raise InputError(
                    f"This voice was made with another model size (x-vector of {v.speaker_embedding.numel()} "
                    f"values; this model uses {self.config.talker.hidden_size}). Re-create it with this model.")
        reqs = [Request(t, l, None, None, v, non_streaming_text) for t, l, v in zip(
            texts, _broadcast(language, len(texts)), voices)]
        return self.generate(reqs, warnings=self.text_notes(texts), **options)

    def build_prompts(self, requests: Sequence[Request]) -> list[TalkerPrompt]:
        prompts = []
        for i, r in enumerate(requests):
            try:
                prompts.append(self.prompts.build(self.check(r)))
            except InputError as e:
                if len(requests) == 1:
                    raise
                raise InputError(f"Text {i + 1} of {len(requests)}: {e}") from None
        return prompts

    def frame_loop(self, requests: Sequence[Request], max_frames: int | None = None,
                   sampling: Sampling | None = None, sub_sampling: Sampling | None = None,
                   seed: int | None = None, static: bool = False,
                   cuda_graphs: bool | None = None, check_every: int = 4, ahead: bool = True) -> FrameLoop:
        """Validates a batch and sets up its generation (an iterator of frames). Item i samples
        from seed + i (the same codes alone as in the batch); no seed: one drawn from torch's
        global generator. `check_every`, `ahead`: see FrameLoop."""
        if not requests:
            raise InputError("Nothing to generate: no texts given.")
        default, default_sub = self.default_sampling()
        sampling = (sampling or default).check("Talker")
        sub_sampling = (sub_sampling or default_sub).check("Code predictor")
        prompts = self.build_prompts(requests)
        text_tokens = max(len(p.ids["text"]) - 8 for p in prompts)
        if text_tokens > MAX_TEXT_TOKENS:
            raise InputError(f"The text is {text_tokens} tokens long; one generation takes at most "
                             f"{MAX_TEXT_TOKENS}. Split it, or use the long-text node which does that.")
        if max_frames is None:
            max_frames = self.auto_max_frames([r.text for r in requests], [r.language for r in requests])
        if not isinstance(max_frames, int) or max_frames < 1:
            raise InputError(f"max_frames must be a positive integer (got {max_frames!r}).")
        longest = max(p.embeds.shape[0] for p in prompts)
        if longest + max_frames > self.config.talker.max_position_embeddings:
            raise InputError(
                f"Prompt ({longest} positions) plus {max_frames} frames exceeds the model context of "
                f"{self.config.talker.max_position_embeddings}; shorten the text or the reference.")
        with torch.inference_mode():
            tts_pad = self.model.talker.embed_text(
                torch.tensor([self.config.tts_pad_token_id], device=self.device))[0]
            batch = collate(prompts, tts_pad)
        step = self._frame_step(len(prompts), longest + max_frames, sampling, sub_sampling,
                                static, self.uses_cuda_graphs(cuda_graphs))
        keys = item_keys(random_seed() if seed is None else seed, len(prompts))
        return FrameLoop(step, batch, max_frames, keys, check_every, ahead)

    def auto_max_frames(self, texts: Sequence[str], language: str | Sequence[str] = "auto") -> int:
        """The frame limit a batch gets without max_frames: per text from its length and language
        (`duration.max_frames_for`, at most the checkpoint's max_new_tokens - 1), the longest for
        the batch."""
        cap = max(1, self.defaults.max_new_tokens - 1)
        return max(max_frames_for(t, l, cap) for t, l in zip(texts, _broadcast(language, len(texts))))

    def uses_cuda_graphs(self, cuda_graphs: bool | None = None) -> bool:
        """Whether generation replays CUDA graphs: asked for (default: `self.cuda_graphs`) and on CUDA."""
        wanted = self.cuda_graphs if cuda_graphs is None else cuda_graphs
        return bool(wanted) and self.device.type == "cuda"

    def _frame_step(self, batch: int, length: int, sampling: Sampling, sub_sampling: Sampling,
                    static: bool, graphs: bool):
        """A fresh dynamic step sized for this prompt, or the kept static step (with its CUDA
        graph) of this shape bucket."""
        talker = self.model.talker
        if not (static or graphs):
            return FrameStep(talker, batch, length, sampling, sub_sampling, self.dtype, self.device)
        cache_len = cache_bucket(length, self.config.talker.max_position_embeddings)
        key = (batch, cache_len, self.dtype, str(self.device), astuple(sampling), astuple(sub_sampling), graphs)

        def make():
            state = FrameStep(talker, batch, cache_len, sampling, sub_sampling, self.dtype, self.device, static=True)
            return GraphedStep(state) if graphs else state

        return self.steps.get(key, weights_key(talker), make)

    def graph_fallbacks(self) -> list[str]:
        """Kept shapes whose CUDA graph capture failed, and why ("batch 2, cache 512: ...")."""
        return [f"batch {key[0]}, cache {key[1]}: {step.failed}" for key, step in self.steps.steps.items()
                if isinstance(step, GraphedStep) and step.failed is not None]

    def release_steps(self) -> None:
        """Frees the kept static steps and CUDA graphs (their KV caches); the next generation of
        each shape builds (captures) them again. ComfyUI calls this when it offloads the model."""
        self.steps.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def memory_estimate(self, batch: int, frames: int, prompt_positions: int = 512,
                        device: torch.device | None = None, decode: bool = True) -> int:
        """Bytes a generation of `batch` items of up to `frames` frames after prompts of up to
        `prompt_positions` positions needs on `device` (default: where the model is) besides
        the weights: the talker's and code predictor's KV caches (at the bucketed cache length
        when CUDA graphs keep them) and frame state, the larger of the prefill's and a frame's
        transient memory (`step_bytes`), plus the speech decoder's working memory for the
        batch. With graphs the caches stay allocated while decoding, so both count; otherwise
        the caches are freed first and the larger of the two counts."""
        device = torch.device(device) if device is not None else self.device
        graphs = bool(self.cuda_graphs) and device.type == "cuda"
        length = prompt_positions + frames
        if graphs:
            length = cache_bucket(length, self.config.talker.max_position_embeddings)
        caches = step_bytes(self.model.talker, batch, prompt_positions, length, self.dtype)
        if not decode or self.codec is None or self.codec.decoder is None:
            return caches
        decoding = self.codec.decode_bytes(batch, frames, device)
        return caches + decoding if graphs else max(caches, decoding)

    def generate(self, requests: Sequence[Request], max_frames: int | None = None,
                 sampling: Sampling | None = None, sub_sampling: Sampling | None = None,
                 seed: int | None = None, decode: bool = False,
                 on_frame: Callable[[int, torch.Tensor], bool | None] | None = None,
                 warnings: list[str] | None = None, static: bool = False,
                 cuda_graphs: bool | None = None,
                 on_start: Callable[[int], None] | None = None,
                 on_decode: Callable[[int, int], None] | None = None) -> GenerationResult:
        """Generates a batch (texts may differ in length, voice and language). Item i of the
        batch samples from seed + i, so a text gets the same codes alone as in a batch.

        `on_start(max_frames)` runs once before the first frame with the frame limit in force
        (progress bars); `on_frame(index, frame [B, 16])` after each frame (progress, interrupt
        by raising, return True to stop early); `on_decode(frames_done, frames_total)` before
        each decoder chunk, the first with 0 done (interrupt by raising). `static` runs the frame step with fixed shapes;
        `cuda_graphs` (default: the model's setting, on) replays it as a CUDA graph on CUDA
        devices. In fp32 the codes are the same either way; in bf16/fp16 they agree with the
        dynamic step's up to rounding, which can part them after some frames (README,
        Exactness). The KV caches of a dynamic step are freed before decoding. A static step is
        kept for the next generation of its shape; if that shape's kept step is still held by an
        unfinished `stream()`, this generation runs in a fresh step instead (same codes)."""
        try:
            frames = self._codes(requests, max_frames, sampling, sub_sampling, seed, static,
                                 cuda_graphs, on_start, on_frame)
        except torch.OutOfMemoryError:
            self.release_steps()
            raise OutOfMemory(
                f"Out of memory on {self.device} while generating a batch of {len(requests)}. The "
                "generation's memory was freed. Generate fewer lines at once, lower max_seconds, "
                "or free memory (unload other models).") from None
        except RuntimeError as e:
            lost = device_lost(e, self.device)
            if lost is None:
                raise
            self.steps.clear()
            raise lost from None
        result = GenerationResult(frames.codes, frames.stopped, list(warnings or []), ran=frames.ran,
                                  replayed=frames.replayed)
        log.info("Generated %d clip(s), %d frames: %s", len(requests), max(len(c) for c in frames.codes),
                 frames.ran)
        for w in result.warnings:
            log.warning(w)
        if decode:
            result.audio = self.decode(result.codes, [r.voice for r in requests], on_decode)
        return result

    def _codes(self, requests, max_frames, sampling, sub_sampling, seed, static, cuda_graphs,
               on_start, on_frame) -> Frames:
        """Runs the frame loop; its KV caches go when this returns (dynamic step) or stay with
        their bucket (static step, CUDA graphs)."""
        loop = self.frame_loop(requests, max_frames, sampling, sub_sampling, seed, static, cuda_graphs)
        if on_start is not None:
            on_start(loop.max_frames)
        return collect(loop, on_frame)

    def stream(self, requests: Sequence[Request], chunk_frames: int = 4, **options) -> Iterator["AudioChunk"]:
        """Generates and decodes at the same time: yields each item's audio in chunks of
        `chunk_frames` frames (80 ms each) as soon as they are generated; the last chunk of an
        item has final=True. Options as for generate(). The joined chunks of an item equal
        decode() of its codes (in-context clones: the reference frames prime the decoder), except
        that for in-context clones decode() may start one sample earlier: it cuts the reference
        share off as the official package does (see speech_codes.decode).

        With `static`/CUDA graphs the stream holds its shape's kept step until it is read to the
        end, closed or dropped; a generation of the same shape meanwhile runs in a step of its
        own (same codes; memory, and a graph capture, of its own)."""
        if self.codec is None:
            raise ModelFolderError("This model was loaded without its speech tokenizer.")
        if chunk_frames < 1:
            raise InputError("chunk_frames must be >= 1.")
        # the frames of each chunk are read back together; no read-ahead: the decoder's work on a
        # chunk is queued right behind it, not behind the next chunk's frames (first audio sooner)
        loop = self.frame_loop(requests, check_every=chunk_frames, ahead=False, **options)
        decoders = [self.codec.streaming_decoder(1, chunk_frames) for _ in requests]
        for d, r in zip(decoders, requests):
            if r.voice is not None and r.voice.in_context:
                d.push(r.voice.ref_codes.t()[None].to(self.device))
                d.flush()
        done = [False] * len(requests)
        running = iter(loop)
        try:
            for step, frame in running:
                for i, d in enumerate(decoders):
                    if done[i]:
                        continue
                    if 0 <= loop.ended[i] <= step:              # ended before this frame
                        done[i] = True
                        yield AudioChunk(i, d.flush()[0], True)
                        continue
                    audio = d.push(loop.on_device(step)[i, :, None][None].clone())
                    if audio.shape[-1]:
                        yield AudioChunk(i, audio[0], False)
        finally:
            running.close()   # a stream closed or dropped before its end frees its step at once
        for i, d in enumerate(decoders):
            if not done[i]:
                yield AudioChunk(i, d.flush()[0], True)

    # ------------------------------------------------------------------ audio
    def decode(self, codes: Sequence[torch.Tensor], voices: Sequence[VoicePrompt | None] | None = None,
               on_chunk: Callable[[int, int], None] | None = None):
        """Codes -> 24 kHz waveforms. For in-context clones the reference codes are decoded in
        front (as context for the causal decoder) and their share of the audio is cut off.
        Decoded in chunks whose size bounds the memory of the batch; `on_chunk(done, total)`
        runs before each chunk, the first time with done=0, not after the last (raise to stop:
        the decode's memory is freed)."""
        if self.codec is None:
            raise ModelFolderError("This model was loaded without its speech tokenizer.")
        voices = list(voices or [None] * len(codes))
        context = [v.ref_codes if v is not None and v.in_context else None for v in voices]
        try:
            return speech_codes.decode(self.codec, speech_codes.SpeechCodes(list(codes), context), on_chunk)
        except torch.OutOfMemoryError:
            if self.codec.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"Out of memory on {self.codec.device} while decoding {len(codes)} clip(s) to audio; "
                "the decode's memory was freed (the codes are kept). Decode fewer clips at once "
                "(Decode Codes to Audio on a part), or free memory (unload other models).") from None


def _as_list(x) -> list:
    if isinstance(x, str) or not isinstance(x, Sequence):
        return [x]
    return list(x)


def _broadcast(x, n: int) -> list:
    items = _as_list(x)
    if len(items) == 1:
        return items * n
    if len(items) != n:
        raise InputError(f"Got {len(items)} values for a batch of {n} texts; give one or {n}.")
    return items
