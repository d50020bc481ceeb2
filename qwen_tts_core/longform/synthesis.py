"""One voice saying many chunks: the same conditioning every time, run-aways caught, trimmed
and retried with another seed, and a report per chunk.

Keeping the voice across chunks, per kind of voice:
  - built-in speaker (CustomVoice) and cloned voice (Base): every chunk's prompt carries the
    same speaker id / x-vector (and the same reference codes for in-context clones);
  - designed voice (VoiceDesign): a description alone gives a somewhat different voice on every
    generation, so the first good chunk (text and codes) becomes an in-context reference for
    all the following ones, next to the description. The VoiceDesign model has no speaker
    encoder: the reference is a `VoicePrompt` without x-vector.

`Speaker.speak(text, style)` is what the long-form renderers call (style None unless a script
line gives one); anything with the same method (a test double, another engine) can stand in for it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch

from ..audio import MODEL_RATE
from ..duration import FRAME_RATE, expected_seconds
from ..errors import InputError, UnsupportedModeError
from ..prompt import Request, VoicePrompt
from ..sampling import Sampling
from .runaway import Runaway, RunawayDetector, RunawayLimits

_KINDS = {"custom_voice": ("custom", "a CustomVoice model"), "voice_design": ("design", "the VoiceDesign model"),
          "base": ("clone", "a Base model")}


class SpeechModel(Protocol):
    """What a voice needs from its model: a loaded `QwenTTS`, or anything that offers the same
    (the ComfyUI nodes' ModelHandle, which puts the model on its device before each generation)."""

    @property
    def folder(self) -> Path: ...

    @property
    def model_type(self) -> str: ...

    @property
    def speakers(self) -> list[str]: ...

    def check(self, request: Request) -> Request: ...

    def generate(self, requests: Sequence[Request], *, max_frames: int | None = None,
                 sampling: Sampling | None = None, sub_sampling: Sampling | None = None,
                 seed: int | None = None, on_frame: Callable | None = None): ...

    def decode(self, codes: Sequence[torch.Tensor], voices=None, on_chunk=None) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class VoiceSpec:
    """Who speaks, and with which model: a built-in speaker, a description or a cloned voice
    (a `VoicePrompt`, e.g. from create_voice_clone_prompt or a saved voice). Build with
    `custom`, `design` or `clone_of`, which check the model is of the right kind."""
    tts: SpeechModel                           # a loaded model of the matching kind
    speaker: str | None = None                 # built-in speaker (CustomVoice)
    instruct: str | None = None                # style (CustomVoice 1.7B) or voice description (VoiceDesign)
    clone: VoicePrompt | None = None           # cloned voice (Base)
    language: str = "auto"

    @classmethod
    def custom(cls, tts, speaker: str, language: str = "auto", instruct: str | None = None) -> "VoiceSpec":
        return cls(tts, speaker=speaker, instruct=instruct, language=language).check("custom")

    @classmethod
    def design(cls, tts, description: str, language: str = "auto") -> "VoiceSpec":
        return cls(tts, instruct=description, language=language).check("design")

    @classmethod
    def clone_of(cls, tts, prompt: VoicePrompt, language: str = "auto") -> "VoiceSpec":
        return cls(tts, clone=prompt, language=language).check("clone")

    @property
    def kind(self) -> str:
        return _KINDS[self.tts.model_type][0]

    def check(self, expected: str | None = None) -> "VoiceSpec":
        kind = self.kind
        if expected is not None and kind != expected:
            need = next(name for k, name in _KINDS.values() if k == expected)
            raise UnsupportedModeError(f"A {expected} voice needs {need}; {self.tts.folder.name} is a "
                                       f"{self.tts.model_type} model.")
        if kind == "custom" and not (self.speaker or "").strip():
            raise InputError(f"Choose a speaker: {', '.join(self.tts.speakers)}.")
        # the model's own checks of the language and the built-in speaker (on a stand-in text:
        # the chunks come later)
        self.tts.check(self.request("a"))
        if kind == "design" and not (self.instruct or "").strip():
            raise InputError("A designed voice needs a description (e.g. 'A warm, low female "
                             "voice, calm and slow').")
        if kind == "clone" and not isinstance(self.clone, VoicePrompt):
            raise InputError("A cloned voice needs a voice made by create_voice_clone_prompt "
                             "(or a saved voice) with this Base model.")
        if kind == "clone" and self.clone.speaker_embedding is None:
            raise InputError("This voice has no speaker embedding; clone from reference audio.")
        if kind != "custom" and self.speaker:
            raise UnsupportedModeError(f"Built-in speakers need a CustomVoice model; "
                                       f"{self.tts.folder.name} is a {self.tts.model_type} model.")
        if kind != "clone" and self.clone is not None:
            raise UnsupportedModeError(f"Cloned voices need a Base model; {self.tts.folder.name} "
                                       f"is a {self.tts.model_type} model.")
        return self

    def request(self, text: str, style: str | None = None, carry: VoicePrompt | None = None) -> Request:
        """The generation request for one chunk. Everything but `text` is the same for every
        chunk of this voice (the carry, once set, too)."""
        if self.kind == "custom":
            return Request(text, self.language, self.speaker, style or self.instruct, None, True)
        if self.kind == "design":
            return Request(text, self.language, None, self.instruct, carry, True)
        return Request(text, self.language, None, None, self.clone, False)  # the official clone default


@dataclass
class ChunkReport:
    """What happened to one chunk, for the user."""
    index: int
    text: str
    attempts: int = 1
    problems: list[str] = field(default_factory=list)   # one line per rejected attempt
    seed: int | None = None                             # seed of the take that was kept
    trimmed_seconds: float = 0.0                        # run-away audio cut from the kept take
    seconds: float = 0.0                                # audio kept
    clean: bool = True                                  # the kept take ended normally

    def summary(self) -> str:
        head = f"chunk {self.index + 1}: {self.seconds:.1f} s"
        if self.attempts > 1 or not self.clean:
            head += f", {self.attempts} attempt(s): " + "; ".join(self.problems)
            if self.trimmed_seconds:
                head += f"; {self.trimmed_seconds:.1f} s trimmed"
            if not self.clean:
                head += " (kept the best take; listen to this chunk)"
        return head


@dataclass
class Take:
    audio: torch.Tensor          # [samples] float32, 24 kHz
    codes: torch.Tensor          # [frames, 16]
    request: Request             # what was generated (for inspection)
    report: ChunkReport


def seed_for(base: int, index: int, attempt: int) -> int:
    """A different, reproducible seed per chunk and attempt."""
    return (base + 7919 * index + 104729 * attempt) % (2 ** 63)


class Speaker:
    """One voice saying chunk after chunk.

    `retries`: extra attempts for a chunk whose generation ran away. `decode`: codes -> audio,
    `decode(list of [T, 16], list of voices) -> list of [samples]` (default: the model's codec).
    `limits`: run-away thresholds. `max_frames`: fixed frame limit (default: from each chunk's
    text). `too_short`: a take shorter than this share of the expected duration (for chunks
    expected to last 4 s or more) skipped text and is retried. `end_of_speech_required=False`
    accepts a take that reached the frame limit as clean (for weights that never end on their
    own, such as random test checkpoints). `min_reference_seconds`: a designed voice is carried
    from the first clean take at least this long (`carry_designed_voice=False`: every chunk is
    designed afresh from the description). `on_frame(index, frame)`: called for every generated
    frame (progress inside a chunk; raise to interrupt).
    """

    def __init__(self, voice: VoiceSpec, seed: int | None = None, sampling: Sampling | None = None,
                 sub_sampling: Sampling | None = None, retries: int = 2,
                 decode: Callable | None = None, limits: RunawayLimits | None = None,
                 max_frames: int | None = None, too_short: float = 0.3,
                 end_of_speech_required: bool = True, min_reference_seconds: float = 2.0,
                 on_frame: Callable[[int, torch.Tensor], None] | None = None,
                 carry_designed_voice: bool = True):
        if not isinstance(retries, int) or not 0 <= retries <= 10:
            raise InputError(f"retries must be an integer from 0 to 10 (got {retries!r}).")
        self.voice = voice
        self.language = voice.language
        self.seed = random.randrange(2 ** 31) if seed is None else int(seed)
        self.sampling, self.sub_sampling = sampling, sub_sampling
        self.retries, self.limits, self.max_frames = retries, limits, max_frames
        self.too_short, self.min_reference_seconds = too_short, min_reference_seconds
        self.end_of_speech_required = end_of_speech_required
        self.on_frame = on_frame
        self.carry_designed_voice = carry_designed_voice
        self.decode = decode or voice.tts.decode
        self.carry: VoicePrompt | None = None     # designed voice: the first good chunk
        self.chunks_spoken = 0

    def _generate(self, request: Request, seed: int, sampling: Sampling | None, expected: float):
        detector = RunawayDetector(self.limits)

        def on_frame(index: int, frame: torch.Tensor) -> bool:
            if self.on_frame is not None:
                self.on_frame(index, frame)
            return detector(index, frame)

        out = self.voice.tts.generate([request], max_frames=self.max_frames, sampling=sampling,
                                      sub_sampling=self.sub_sampling, seed=seed, on_frame=on_frame)
        codes = out.codes[0]
        problem = detector.found
        if problem is None and not out.stopped[0] and self.end_of_speech_required:
            problem = Runaway("no end of speech", codes.shape[0], codes.shape[0],
                              f"stopped at the frame limit, {codes.shape[0] / FRAME_RATE:.1f} s")
        if problem is None and expected >= 4 and codes.shape[0] < self.too_short * expected * FRAME_RATE:
            problem = Runaway("ended too early", codes.shape[0], codes.shape[0],
                              f"{codes.shape[0] / FRAME_RATE:.1f} s for ~{expected:.0f} s of text")
        return codes, problem

    def speak(self, text: str, style: str | None = None) -> Take:
        """Says `text` (one chunk) in this voice; `style` is an instruction for this chunk only
        (built-in speakers of 1.7B models; other voices ignore it)."""
        index = self.chunks_spoken
        self.chunks_spoken += 1
        request = self.voice.request(text, style, self.carry)
        report = ChunkReport(index, text)
        expected = expected_seconds(text, request.language)
        takes = []
        for attempt in range(self.retries + 1):
            seed = seed_for(self.seed, index, attempt)
            sampling = self.sampling
            if attempt and sampling is not None and not sampling.do_sample:
                sampling = None      # greedy would repeat itself: retries sample (model defaults)
            codes, problem = self._generate(request, seed, sampling, expected)
            takes.append((problem, codes, seed))
            report.attempts = attempt + 1
            if problem is None:
                break
            how = "greedy" if self._greedy(sampling) else f"seed {seed}"   # the seed only where it decides
            report.problems.append(f"attempt {attempt + 1} ({how}): {problem.describe()}")
        problem, codes, seed = self._best(takes, expected)
        kept = codes[: problem.keep] if problem is not None else codes
        report.seed, report.clean = seed, problem is None
        report.trimmed_seconds = (codes.shape[0] - kept.shape[0]) / FRAME_RATE
        voice_prompt = request.voice
        audio = self.decode([kept], [voice_prompt])[0] if kept.shape[0] else torch.zeros(0)
        # a copy: decode may return a view into a larger buffer (e.g. with the reference decoded
        # in front of it), which would otherwise stay alive as long as this chunk's audio
        audio = audio.detach().to("cpu", torch.float32).flatten().clone()
        report.seconds = audio.numel() / MODEL_RATE
        first_good_design = (self.voice.kind == "design" and self.carry_designed_voice
                             and self.carry is None and problem is None
                             and kept.shape[0] >= self.min_reference_seconds * FRAME_RATE)
        if first_good_design:
            self.carry = VoicePrompt(None, kept.clone(), text)
        return Take(audio, kept, request, report)

    def _greedy(self, sampling: Sampling | None) -> bool:
        """True when neither the talker nor the code predictor samples (None: the model's
        defaults, which sample): the take is the same under any seed."""
        return all(s is not None and not s.do_sample for s in (sampling, self.sub_sampling))

    @staticmethod
    def _best(takes, expected: float):
        """The first clean take; else the take whose kept part is closest to the expected length."""
        for take in takes:
            if take[0] is None:
                return take
        return min(takes, key=lambda t: abs(t[0].keep / FRAME_RATE - expected))
