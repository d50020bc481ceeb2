"""Public API: load a Qwen3-TTS folder, build voices, generate codes (and audio).

    tts = QwenTTS.from_pretrained("models/qwen-tts/Qwen3-TTS-12Hz-1.7B-CustomVoice")
    out = tts.generate_custom_voice("Hello!", speaker="Vivian", language="English", seed=1)
    out.codes[0]   # [frames, 16] int64

`QwenTTS` is the facade: loading, voices, the texts' checks and prompts, and the three
`generate_*` entry points. Where it runs and in which precision is `device.py`'s policy; the
generation itself (frame loops, kept steps and CUDA graphs, memory, streaming, decoding) is the
`Engine` it holds (`tts.engine`, engine.py).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from . import audio as audio_io
from .checkpoint import load_into, load_text_tokenizer, weight_files
from .config import GenerationDefaults, ModelConfig, read_json
from .device import (DTYPES, auto_dtype, bf16_emulated, check_dtype_runs, choose_dtype,  # noqa: F401  (their
                     decoder_dtype, probe_device, resolve_device)                          # old home: api)
from .duration import FRAME_RATE, max_frames_for  # noqa: F401  (FRAME_RATE is part of the API)
from .engine import AudioChunk, Engine, GenerationResult
from .errors import InputError, ModelFolderError, UnsupportedModeError
from .generate import FrameLoop, StepBuckets
from .longform.languages import unsupported_script_note  # the languages table is the long-form one; text_notes reads it
from .prompt import PromptBuilder, Request, TalkerPrompt, VoicePrompt
from .sampling import Sampling
from .speaker import LogMel, SpeakerEncoder
from .talker import Qwen3TTS
from .text import check_text

log = logging.getLogger("qwen_tts_core")

MAX_TEXT_TOKENS = 4096       # one generation; longer texts go through the long-form splitter


def build_model(config: ModelConfig, files: dict, dtype: torch.dtype, device: torch.device) -> Qwen3TTS:
    """Builds the modules on the meta device and assigns the checkpoint tensors, already in
    `dtype` on `device`: no fp32 copy of the model is ever made. The rotary tables (built on
    the CPU) then follow in `dtype` to `device`."""
    with torch.device("meta"):
        speaker = SpeakerEncoder(config.speaker_encoder) if config.speaker_encoder else None
        model = Qwen3TTS(config.talker, speaker)
    load_into(model, files, dtype, device, what=f"Qwen3-TTS {config.tts_model_type}")
    return model.to(device=device, dtype=dtype)


load_model = build_model     # its old name


class QwenTTS:
    def __init__(self, folder: Path, config: ModelConfig, model: Qwen3TTS, tokenizer,
                 defaults: GenerationDefaults, codec=None, cuda_graphs: bool = True,
                 dtype_reason: str = ""):
        self.folder, self.config, self.model = folder, config, model
        self.tokenizer, self.defaults, self.codec = tokenizer, defaults, codec
        self.prompts = PromptBuilder(model.talker, config, tokenizer)
        self.log_mel = LogMel(config.speaker_encoder.sample_rate) if config.speaker_encoder else None
        self.dtype_reason = dtype_reason   # why this precision (dtype auto says what it found)
        self.engine = Engine(model.talker, codec, config.talker.max_position_embeddings,
                             config.tts_pad_token_id, cuda_graphs)

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
        model = build_model(config, files, dt, dev)
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
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.dtype

    @property
    def cuda_graphs(self) -> bool:
        """The default of generate(): replay frames as CUDA graphs on CUDA devices."""
        return self.engine.cuda_graphs

    @cuda_graphs.setter
    def cuda_graphs(self, on: bool) -> None:
        self.engine.cuda_graphs = on

    @property
    def steps(self) -> StepBuckets:
        """The frame steps (and CUDA graphs) kept between generations."""
        return self.engine.steps

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
        mel = self.log_mel(wav[None])                                      # [1, frames, 128] fp32
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

    def frame_limit(self, texts: Sequence[str], language: str | Sequence[str] = "auto",
                    max_frames: int | None = None) -> int:
        """The frame limit of a batch: `max_frames` when given (checked), else `auto_max_frames`.
        Callers that size memory first (the ComfyUI nodes) pass the number on as max_frames."""
        if max_frames is None:
            return self.auto_max_frames(texts, language)
        if not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 1:
            raise InputError(f"max_frames must be a positive integer (got {max_frames!r}).")
        return max_frames

    def auto_max_frames(self, texts: Sequence[str], language: str | Sequence[str] = "auto") -> int:
        """The frame limit a batch gets without max_frames: per text from its length and language
        (`duration.max_frames_for`, at most the checkpoint's max_new_tokens - 1), the longest for
        the batch."""
        cap = max(1, self.defaults.max_new_tokens - 1)
        return max(max_frames_for(t, l, cap) for t, l in zip(texts, _broadcast(language, len(texts))))

    def frame_loop(self, requests: Sequence[Request], max_frames: int | None = None,
                   sampling: Sampling | None = None, sub_sampling: Sampling | None = None,
                   seed: int | None = None, static: bool = False,
                   cuda_graphs: bool | None = None, check_every: int = 4, ahead: bool = True) -> FrameLoop:
        """Validates a batch and sets up its generation (an iterator of frames; `Engine.frame_loop`).
        Item i samples from seed + i (the same codes alone as in the batch)."""
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
        max_frames = self.frame_limit([r.text for r in requests], [r.language for r in requests], max_frames)
        return self.engine.frame_loop(prompts, max_frames, sampling, sub_sampling, seed, static, cuda_graphs,
                                      check_every, ahead)

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
        each decoder chunk, the first with 0 done (interrupt by raising). `static` runs the frame
        step with fixed shapes; `cuda_graphs` (default: the model's setting, on) replays it as a
        CUDA graph on CUDA devices. In fp32 the codes are the same either way; in bf16/fp16 they
        agree with the dynamic step's up to rounding, which can part them after some frames
        (README, Exactness). The KV caches of a dynamic step are freed before decoding. A static
        step is kept for the next generation of its shape; if that shape's kept step is still
        held by an unfinished `stream()`, this generation runs in a fresh step instead (same
        codes). The result says what ran (`ran`, `replayed`)."""
        with self.engine.failures(len(requests)):
            loop = self.frame_loop(requests, max_frames, sampling, sub_sampling, seed, static, cuda_graphs)
            if on_start is not None:
                on_start(loop.max_frames)
            frames = self.engine.run(loop, on_frame)
        result = GenerationResult(frames.codes, frames.stopped, list(warnings or []), ran=frames.ran,
                                  replayed=frames.replayed)
        for w in result.warnings:
            log.warning(w)
        if decode:
            result.audio = self.decode(result.codes, [r.voice for r in requests], on_decode)
        return result

    def stream(self, requests: Sequence[Request], chunk_frames: int = 4, **options) -> Iterator[AudioChunk]:
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
        return self.engine.stream(loop, [r.voice for r in requests], chunk_frames)

    # ------------------------------------------------------------------ the engine's, for callers of QwenTTS
    def decode(self, codes: Sequence[torch.Tensor], voices: Sequence[VoicePrompt | None] | None = None,
               on_chunk: Callable[[int, int], None] | None = None):
        """Codes -> 24 kHz waveforms (`Engine.decode`)."""
        return self.engine.decode(codes, voices, on_chunk)

    def memory_estimate(self, batch: int, frames: int, prompt_positions: int = 512,
                        device: torch.device | None = None, decode: bool = True) -> int:
        """Bytes a generation needs besides the weights (`Engine.memory_estimate`)."""
        return self.engine.memory_estimate(batch, frames, prompt_positions, device, decode)

    def uses_cuda_graphs(self, cuda_graphs: bool | None = None) -> bool:
        return self.engine.uses_cuda_graphs(cuda_graphs)

    def graph_fallbacks(self) -> list[str]:
        return self.engine.graph_fallbacks()

    def release_steps(self) -> None:
        """Frees the kept steps and CUDA graphs (ComfyUI calls this when it offloads the model)."""
        self.engine.release_steps()


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
