"""Generation nodes: built-in speakers (CustomVoice), designed voices (VoiceDesign) and cloned
voices (Base). They validate, call the core with a progress bar that also checks for interrupts,
and return the audio and the codes."""
from __future__ import annotations

import logging

from comfy_api.latest import io
from qwen_tts_core.errors import InputError
from qwen_tts_core.speech_codes import SpeechCodes
from qwen_tts_core.voice import Voice

from . import runtime
from .loudness import check_preset, level_clips, loudness_input
from .types import (CATEGORY, SPEAKERS, Codes, Voice as VoiceType, audio_outputs, generation_inputs,
                    model_input, sampling_settings, speaker_choice, split_texts, text_inputs, to_audio)
from .watermark import generator_for, mark, watermark_input

log = logging.getLogger("qwen_tts_nodes")


def _outputs() -> list[io.Output]:
    return audio_outputs() + [Codes.Output("codes", display_name="codes",
                                           tooltip="The speech codes of the clips (decode them again "
                                                   "with Decode Codes to Audio).")]


def _output_inputs() -> list[io.Input]:
    """Appended last (workflows map widget values by position; older ones get these defaults)."""
    return [loudness_input(), watermark_input()]


def _generate(model, method: str, texts: list[str], language, seed, temperature, top_k, top_p,
              repetition_penalty, max_seconds, contexts=None, loudness="off", watermark=False,
              **kwargs) -> io.NodeOutput:
    if model is None or not hasattr(model, "ready"):
        raise InputError("Connect a Qwen3-TTS Model Loader to 'model'.")
    sampling, sub_sampling = sampling_settings(temperature, top_k, top_p, repetition_penalty)
    check_preset(loudness)                      # an unknown preset stops here, before generating,
    marker = generator_for(watermark)           # as do missing watermark weights
    max_frames = runtime.seconds_to_frames(max_seconds)
    frames = max_frames or model.tts.auto_max_frames(texts, language)   # the limit the generation uses
    tts = model.ready(with_codec=True, batch=len(texts), frames=frames)
    progress = runtime.FrameProgress()
    result = runtime.run_interruptible(lambda: getattr(tts, method)(
        texts, language=language, max_frames=max_frames, sampling=sampling, sub_sampling=sub_sampling,
        seed=int(seed), decode=True, on_frame=progress.on_frame, on_start=progress.on_start,
        on_decode=progress.on_decode, **kwargs))
    for i, stopped in enumerate(result.stopped):
        if not stopped:
            log.warning("Qwen3-TTS: clip %d reached the length limit before the speech ended; raise "
                        "max_seconds if it was cut.", i + 1)
    waves = level_clips([mark(marker, w, result.sample_rate) for w in result.audio], result.sample_rate, loudness)
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
        return _generate(model, "generate_custom_voice", texts, language, seed, temperature, top_k, top_p,
                         repetition_penalty, max_seconds, speaker=speaker,
                         instruct=(instruction or "").strip() or None, loudness=loudness, watermark=watermark)


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
        return _generate(model, "generate_voice_design", texts, language, seed, temperature, top_k, top_p,
                         repetition_penalty, max_seconds, instruct=voice_description.strip(), loudness=loudness,
                         watermark=watermark)


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
        return _generate(model, "generate_voice_clone", texts, language, seed, temperature, top_k, top_p,
                         repetition_penalty, max_seconds, contexts=context, voice=voice.prompt, loudness=loudness,
                         watermark=watermark)
