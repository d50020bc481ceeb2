"""Wire types of the pack and the inputs/outputs that several nodes share."""
from __future__ import annotations

import math

import torch

from comfy_api.latest import io   # why latest and not a pinned version: see the pack's __init__.py
from qwen_tts_core.config import GenerationDefaults
from qwen_tts_core.errors import InputError
from qwen_tts_core.text import check_text
from qwen_tts_core.duration import FRAME_RATE
from qwen_tts_core.sampling import Sampling
from qwen_tts_core.speech_codes import SAMPLE_RATE  # 24 kHz: what the model speaks at

CATEGORY = "audio/qwen-tts"

Model = io.Custom("QWEN_TTS_MODEL")          # nodes.models.ModelHandle
Tokenizer = io.Custom("QWEN_TTS_TOKENIZER")  # nodes.models.TokenizerHandle
Voice = io.Custom("QWEN_TTS_VOICE")          # qwen_tts_core.voice.Voice
Codes = io.Custom("QWEN_TTS_CODES")          # qwen_tts_core.speech_codes.SpeechCodes

# Known at definition time (ComfyUI combos are static); the loaded model is checked at run time.
SPEAKERS = ["Vivian", "Serena", "Uncle_Fu", "Ryan", "Aiden", "Ono_Anna", "Sohee", "Eric", "Dylan"]
LANGUAGES = ["Auto", "English", "Chinese", "German", "Italian", "Portuguese", "Spanish", "Japanese",
             "Korean", "French", "Russian"]
DTYPES = ["auto", "bf16", "fp16", "fp32"]
DEVICES = ["auto", "cuda", "cpu", "mps"]
RELEASED = GenerationDefaults()      # the released checkpoints' sampling settings: the widgets' defaults


def model_input(tooltip: str) -> io.Input:
    return Model.Input("model", tooltip=tooltip)


def text_inputs(default: str) -> list[io.Input]:
    return [
        io.String.Input("text", multiline=True, default=default,
                        tooltip="What to say. With 'one text per line' on, every non-empty line is "
                                "a separate clip, generated together as a batch."),
        io.Combo.Input("language", options=LANGUAGES, default="Auto",
                       tooltip="Language of the text. Auto lets the model tell from the text."),
    ]


def generation_inputs() -> list[io.Input]:
    """Sampling and batching widgets shared by the generation nodes (defaults = the released
    checkpoints' generation_config.json)."""
    return [
        io.Boolean.Input("one_text_per_line", default=False,
                         tooltip="Off: the whole text is one clip. On: each non-empty line is its own "
                                 "clip; all lines are generated as one batch."),
        *sampling_inputs(),
        io.Float.Input("max_seconds", default=0.0, min=0.0, max=600.0, step=1.0,
                       tooltip="Upper limit on the length of each clip in seconds. 0 = automatic "
                               "from the text length (stops run-away generations)."),
    ]


def sampling_inputs() -> list[io.Input]:
    """Seed and sampling widgets (defaults = the released checkpoints' generation_config.json)."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Random seed; the same seed, text and settings give the same speech. "
                             "With one text per line, line i uses seed + i, so a line sounds the "
                             "same alone as in the batch (at the same place)."),
        io.Float.Input("temperature", default=RELEASED.temperature, min=0.0, max=2.0, step=0.05,
                       tooltip="Sampling temperature of the talker. Lower = steadier, higher = more "
                               "varied. 0 = greedy, no sampling at all (same text, same speech)."),
        io.Int.Input("top_k", default=RELEASED.top_k, min=0, max=2048,
                     tooltip="Sample only among the k most likely codes (0 = no limit)."),
        io.Float.Input("top_p", default=RELEASED.top_p, min=0.01, max=1.0, step=0.01,
                       tooltip="Nucleus sampling: keep the most likely codes up to this total "
                               "probability (1 = off)."),
        io.Float.Input("repetition_penalty", default=RELEASED.repetition_penalty, min=1.0, max=2.0, step=0.01,
                       tooltip="Penalty on codes already used; >1 avoids loops and babbling."),
    ]


def sampling_settings(temperature, top_k, top_p, repetition_penalty) -> tuple[Sampling, Sampling | None]:
    """(talker, code predictor) sampling from the widgets. Temperature 0 is fully greedy (the code
    predictor too), so the same text always gives the same speech; otherwise the code predictor
    keeps the model's defaults."""
    sampling = Sampling(do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
                        top_k=int(top_k), top_p=float(top_p), repetition_penalty=float(repetition_penalty))
    return sampling.check("Talker"), (None if temperature > 0 else Sampling(do_sample=False))


def audio_outputs() -> list[io.Output]:
    return [
        io.Audio.Output("audio", display_name="audio",
                        tooltip="All clips as one AUDIO batch [clips, 1, samples] at 24 kHz; shorter "
                                "clips are padded with silence at the end to the longest."),
        io.Audio.Output("audio_list", display_name="audio_list", is_output_list=True,
                        tooltip="The clips as a list, each at its own length (a node connected here "
                                "runs once per clip, e.g. Save Audio writes one file per clip)."),
    ]


def validation_result(check, value) -> bool | str:
    """ComfyUI's `validate_inputs` answer for a typed value: True, or the message of the
    InputError that `check(value)` raises, so a bad value stops the prompt before anything runs.
    A value that comes through a link is None at validation time; the node checks it when it runs."""
    if value is None:
        return True
    try:
        check(value)
    except InputError as e:
        return str(e)
    return True


def speaker_choice(node: str, speaker) -> bool | str:
    """`validate_inputs` answer for a built-in speaker: one of SPEAKERS (any case), or a message
    naming the node and the speakers. A linked value (None now) and the loaded model's own list
    are checked when the node runs."""
    if speaker is None or (isinstance(speaker, str) and speaker.strip().lower() in {s.lower() for s in SPEAKERS}):
        return True
    return (f"{node}: unknown speaker {speaker!r}; choose one of the built-in speakers: "
            f"{', '.join(SPEAKERS)}.")


def split_texts(text: str, one_per_line: bool) -> list[str]:
    """The clips to say, each checked by the core's one text check (before any model is loaded)."""
    if not isinstance(text, str):
        raise InputError(f"The text must be a string, got {type(text).__name__}.")
    if not one_per_line:
        return [check_text(text)]
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError("The text is empty; type one line per clip.")
    return [check_text(line, f"Line {n}") for n, line in lines]


def to_audio(waves: list[torch.Tensor], sample_rate: int = SAMPLE_RATE) -> tuple[dict, list[dict]]:
    """Per-clip waveforms [samples] -> (padded AUDIO batch, list of single-clip AUDIO)."""
    if not waves:
        raise InputError("No audio was produced.")
    longest = max(int(w.shape[-1]) for w in waves)
    batch = torch.zeros(len(waves), 1, longest)
    for i, w in enumerate(waves):
        batch[i, 0, : w.shape[-1]] = w.float().cpu()
    items = [{"waveform": w.float().cpu().reshape(1, 1, -1), "sample_rate": sample_rate} for w in waves]
    return {"waveform": batch, "sample_rate": sample_rate}, items


def audio_clips(audio) -> list[tuple[torch.Tensor, int]]:
    """A ComfyUI AUDIO -> [(waveform [channels, samples], sample_rate)] per batch item."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError("Expected an AUDIO input ({'waveform': [batch, channels, samples], "
                         "'sample_rate': int}); connect e.g. a Load Audio node.")
    wav = audio["waveform"]
    if not isinstance(wav, torch.Tensor) or wav.dim() != 3:
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise InputError(f"The AUDIO waveform has shape {shape}; expected [batch, channels, samples].")
    return [(wav[i], audio["sample_rate"]) for i in range(wav.shape[0])]


def seconds_to_frames(seconds: float) -> int | None:
    """max length in seconds (0 = auto from the text) -> frame limit for the core."""
    if seconds is None or seconds <= 0:
        return None
    return max(1, math.ceil(float(seconds) * FRAME_RATE))
