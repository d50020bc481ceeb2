"""Generation nodes: built-in speakers (CustomVoice), designed voices (VoiceDesign) and cloned
voices (Base). They validate, call the core with a progress bar that also checks for interrupts,
and return the audio and the codes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from comfy_api.latest import io
from qwen_tts_core.api import GenerationResult
from qwen_tts_core.errors import InputError
from qwen_tts_core.speech_codes import SpeechCodes
from qwen_tts_core.voice import Voice

from .progress import FrameProgress, run_interruptible
from .loudness import level_clips, loudness_input
from .types import (seconds_to_frames, CATEGORY, SPEAKERS, Codes, Voice as VoiceType, audio_outputs, generation_inputs,
                    model_input, sampling_settings, speaker_choice, split_texts, text_inputs, to_audio)
from .watermark import before_generating, mark, watermark_input

log = logging.getLogger("qwen_tts_nodes")


def _outputs() -> list[io.Output]:
    return audio_outputs() + [Codes.Output("codes", display_name="codes",
                                           tooltip="The speech codes of the clips (decode them again "
                                                   "with Decode Codes to Audio).")]


def _output_inputs() -> list[io.Input]:
    """Appended last (workflows map widget values by position; older ones get these defaults)."""
    return [loudness_input(), watermark_input()]


@dataclass(frozen=True)
class Settings:
    """The widgets every generation node shares, as the node got them."""
    seed: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_seconds: float
    loudness: str = "off"
    watermark: bool = False


def _speak(model, texts: list[str], settings: Settings, generate: Callable[..., GenerationResult],
           contexts=None) -> io.NodeOutput:
    """Runs `generate(**options)` (one of the model handle's generate_* methods, with the node's
    own arguments bound) with the shared settings, a progress bar that also checks for interrupts
    and decoding; then watermark and loudness, as asked."""
    if model is None or not hasattr(model, "ready"):
        raise InputError("Connect a Qwen3-TTS Model Loader to 'model'.")
    sampling, sub_sampling = sampling_settings(settings.temperature, settings.top_k, settings.top_p,
                                               settings.repetition_penalty)
    marker = before_generating(settings.loudness, settings.watermark)
    progress = FrameProgress()
    result = run_interruptible(lambda: generate(
        max_frames=seconds_to_frames(settings.max_seconds), sampling=sampling, sub_sampling=sub_sampling,
        seed=int(settings.seed), decode=True, on_frame=progress.on_frame, on_start=progress.on_start,
        on_decode=progress.on_decode))
    for i, stopped in enumerate(result.stopped):
        if not stopped:
            log.warning("Qwen3-TTS: clip %d reached the length limit before the speech ended; raise "
                        "max_seconds if it was cut.", i + 1)
    waves = level_clips([mark(marker, w, result.sample_rate) for w in result.audio], result.sample_rate,
                        settings.loudness)
    batch, items = to_audio(waves, result.sample_rate)
    return io.NodeOutput(batch, items, SpeechCodes(result.codes, contexts or []))


class QwenTTSCustomVoice(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSCustomVoice",
            display_name="Qwen3-TTS Custom Voice (built-in speakers)",
            category=CATEGORY,
            description="Speech in one of the built-in voices of a CustomVoice model, optionally "
                        "styled by an instruction.",
            inputs=[
                model_input("A CustomVoice model (e.g. Qwen3-TTS-12Hz-1.7B-CustomVoice)."),
                *text_inputs("Hello! This voice was made with Qwen3-TTS in ComfyUI."),
                io.Combo.Input("speaker", options=SPEAKERS, default="Vivian",
                               tooltip="Built-in voice of the released CustomVoice models; the loaded "
                                       "model is checked when the node runs (Eric: Sichuan dialect, "
                                       "Dylan: Beijing dialect)."),
                io.String.Input("instruction", multiline=True, default="",
                                tooltip="Optional speaking style, e.g. 'Speak slowly and warmly, like a "
                                        "bedtime story.' Leave empty for none (followed by the 1.7B "
                                        "model only)."),
                *generation_inputs(),
                io.String.Input("speaker_name", optional=True, force_input=True,
                                tooltip="A speaker name from a wire (e.g. Train Voice's speaker output); "
                                        "when connected it replaces the speaker chosen above."),
                *_output_inputs(),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, speaker=None):
        return speaker_choice("Qwen3-TTS Custom Voice", speaker)   # the loaded model's list: at run time

    @classmethod
    def execute(cls, model, text, language, speaker, instruction, one_text_per_line, seed, temperature,
                top_k, top_p, repetition_penalty, max_seconds, speaker_name=None, loudness="off",
                watermark=False) -> io.NodeOutput:
        texts = split_texts(text, one_text_per_line)
        if speaker_name is not None:                    # a wired name (e.g. Train Voice's) wins
            speaker = speaker_name.strip()
        settings = Settings(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, max_seconds=max_seconds, loudness=loudness,
                            watermark=watermark)
        return _speak(model, texts, settings, lambda **options: model.generate_custom_voice(
            texts, speaker=speaker, language=language, instruct=(instruction or "").strip() or None, **options))


class QwenTTSVoiceDesign(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSVoiceDesign",
            display_name="Qwen3-TTS Voice Design (describe a voice)",
            category=CATEGORY,
            description="Speech in a new voice made from a description (VoiceDesign model). To keep "
                        "the voice for more lines, clone it from this output with a Base model.",
            inputs=[
                model_input("The VoiceDesign model (Qwen3-TTS-12Hz-1.7B-VoiceDesign)."),
                *text_inputs("Welcome back, travellers. Tonight's story begins at the edge of the sea."),
                io.String.Input("voice_description", multiline=True,
                                default="A calm middle-aged male narrator with a deep, warm voice.",
                                tooltip="Describe the voice: gender, age, timbre, accent, emotion, pace."),
                *generation_inputs(),
                *_output_inputs(),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, model, text, language, voice_description, one_text_per_line, seed, temperature,
                top_k, top_p, repetition_penalty, max_seconds, loudness="off", watermark=False) -> io.NodeOutput:
        texts = split_texts(text, one_text_per_line)
        if not isinstance(voice_description, str) or not voice_description.strip():
            raise InputError("The voice description is empty; describe the voice, e.g. 'a young "
                             "woman with a bright, cheerful voice'.")
        settings = Settings(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, max_seconds=max_seconds, loudness=loudness,
                            watermark=watermark)
        return _speak(model, texts, settings, lambda **options: model.generate_voice_design(
            texts, instruct=voice_description.strip(), language=language, **options))


class QwenTTSVoiceClone(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSVoiceClone",
            display_name="Qwen3-TTS Speak with Cloned Voice",
            category=CATEGORY,
            description="Speech in a cloned voice (Base model); the voice comes from Make Voice from "
                        "Reference Audio or Load Voice.",
            inputs=[
                model_input("A Base model (e.g. Qwen3-TTS-12Hz-1.7B-Base), the size the voice was made with."),
                VoiceType.Input("voice", tooltip="A cloned voice (Make Voice from Reference Audio or Load Voice)."),
                *text_inputs("This is my cloned voice, speaking a new line."),
                *generation_inputs(),
                *_output_inputs(),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, model, voice, text, language, one_text_per_line, seed, temperature, top_k, top_p,
                repetition_penalty, max_seconds, loudness="off", watermark=False) -> io.NodeOutput:
        texts = split_texts(text, one_text_per_line)
        if not isinstance(voice, Voice):
            raise InputError("Connect a voice from 'Make Voice from Reference Audio' or 'Load Voice'.")
        if hasattr(model, "tts"):
            voice.check_fits(model.tts)
        context = [voice.prompt.ref_codes if voice.prompt.in_context else None] * len(texts)
        settings = Settings(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, max_seconds=max_seconds, loudness=loudness,
                            watermark=watermark)
        return _speak(model, texts, settings, lambda **options: model.generate_voice_clone(
            texts, voice=voice.prompt, language=language, **options), contexts=context)
