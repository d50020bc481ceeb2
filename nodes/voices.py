"""Cloned voices: made from reference audio, saved to and loaded from models/qwen-tts-voices/."""
from __future__ import annotations

import logging

from comfy_api.latest import io
from qwen_tts_core.errors import InputError
from qwen_tts_core.voice import Voice, load_voice, save_voice, voice_file_name

from . import folders
from .types import CATEGORY, Voice as VoiceType, audio_clips, model_input, validation_result

log = logging.getLogger("qwen_tts_nodes")

MODES = ["auto", "in-context", "x-vector only"]


class QwenTTSVoiceFromAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSVoiceFromAudio",
            display_name="Qwen3-TTS Make Voice from Reference Audio",
            category=CATEGORY,
            description="Makes a reusable cloned voice from a short clip of someone speaking "
                        "(needs a Base model). 3-10 s of clean speech works best.",
            inputs=[
                model_input("A Base model (e.g. Qwen3-TTS-12Hz-1.7B-Base)."),
                io.Audio.Input("reference_audio",
                               tooltip="The voice to clone: 1-60 s of speech (longer clips are cut to "
                                       "60 s with a warning). Any sample rate; stereo is mixed to mono."),
                io.String.Input("reference_text", multiline=True, default="",
                                tooltip="Exactly what is said in the reference audio (NOT the text to "
                                        "speak). Empty: mode auto makes an x-vector-only voice (less "
                                        "close), and in-context mode stops with an error."),
                io.Combo.Input("mode", options=MODES, default="auto",
                               tooltip="in-context: uses the reference audio and its transcript "
                                       "(closest likeness). x-vector only: a speaker embedding alone "
                                       "(no transcript needed, less similar). auto: in-context when a "
                                       "transcript is given, else x-vector only."),
            ],
            outputs=[VoiceType.Output("voice", display_name="voice",
                                      tooltip="The cloned voice, for Speak with Cloned Voice or Save Voice.")],
        )

    @classmethod
    def execute(cls, model, reference_audio, reference_text, mode) -> io.NodeOutput:
        clips = audio_clips(reference_audio)
        if len(clips) != 1:
            raise InputError(f"The reference AUDIO holds {len(clips)} clips; give one clip.")
        if mode not in MODES:
            raise InputError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
        x_vector_only = mode == "x-vector only" or (mode == "auto" and not (reference_text or "").strip())
        if mode == "auto" and x_vector_only:
            log.info("Qwen3-TTS: no reference transcript, so mode auto makes an x-vector-only voice (less "
                     "close to the reference); type what the clip says for an in-context voice.")
        tts = model.ready(with_codec=not x_vector_only)
        wav, rate = clips[0]
        prompt = tts.create_voice_clone_prompt(wav, rate, reference_text, x_vector_only=x_vector_only)
        return io.NodeOutput(Voice.from_model(tts, prompt))


class QwenTTSSaveVoice(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSSaveVoice",
            display_name="Qwen3-TTS Save Voice",
            category=CATEGORY,
            description="Saves a cloned voice as models/qwen-tts-voices/<name>.safetensors for Load Voice.",
            is_output_node=True,
            inputs=[
                VoiceType.Input("voice", tooltip="A voice from Make Voice from Reference Audio or Load Voice."),
                io.String.Input("name", default="my_voice",
                                tooltip="File name of the voice (letters, digits, spaces, '-', '_'); "
                                        "no folders, no Windows device names (con, nul, com1, ...). "
                                        "Checked before the prompt runs."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing, different voice of the same name. Off: "
                                         "such a save stops with an error and the old file is kept."),
            ],
            # output ids must differ from input ids (ComfyUI refuses the schema otherwise)
            outputs=[VoiceType.Output("saved_voice", display_name="voice", tooltip="The same voice, passed on."),
                     io.String.Output("path", display_name="path", tooltip="Where the voice was saved.")],
        )

    @classmethod
    def validate_inputs(cls, name=None):
        return validation_result(voice_file_name, name)

    @classmethod
    def execute(cls, voice, name, overwrite) -> io.NodeOutput:
        if not isinstance(voice, Voice):
            raise InputError("Save Voice needs a voice from 'Make Voice from Reference Audio' or 'Load Voice'.")
        path = save_voice(voice, folders.voice_save_folder(), name, overwrite=overwrite)
        log.info("Saved %s to %s", voice.describe(), path)
        return io.NodeOutput(voice, str(path), ui={"text": [f"saved {path.name}"]})


class QwenTTSLoadVoice(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSLoadVoice",
            display_name="Qwen3-TTS Load Voice",
            category=CATEGORY,
            description="Loads a voice saved by Save Voice and checks that it fits the model.",
            inputs=[
                model_input("The Base model the voice will be used with (its size must match the "
                            "model the voice was made with)."),
                io.Combo.Input("voice_name", options=folders.all_voices(),
                               tooltip="A voice in models/qwen-tts-voices/ (refresh with R after saving)."),
            ],
            outputs=[VoiceType.Output("voice", display_name="voice", tooltip="The loaded voice.")],
        )

    @classmethod
    def validate_inputs(cls, voice_name=None):
        # unsafe names fail now; a name not in the list is reported at run time with what exists
        return validation_result(voice_file_name, voice_name)

    @classmethod
    def fingerprint_inputs(cls, voice_name, **kwargs):
        # the file may change between runs (saved again with overwrite)
        try:
            path = folders.find_voice_file(voice_name)
            return f"{path}:{path.stat().st_mtime_ns}"
        except Exception:
            return float("nan")

    @classmethod
    def execute(cls, model, voice_name) -> io.NodeOutput:
        return io.NodeOutput(load_voice(folders.find_voice_file(voice_name), expect=model.tts))
