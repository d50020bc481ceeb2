"""Speech tokenizer nodes: AUDIO -> codes and codes -> AUDIO."""
from __future__ import annotations

from comfy_api.latest import io
from qwen_tts_core import speech_codes

from .progress import FrameProgress, run_interruptible
from .types import CATEGORY, Codes, Tokenizer, audio_clips, audio_outputs, to_audio


class QwenTTSEncodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSEncodeAudio",
            display_name="Qwen3-TTS Encode Audio to Codes",
            category=CATEGORY,
            description="Turns audio into Qwen3-TTS speech codes (12.5 frames per second, 16 codebooks). "
                        "Any sample rate and channel count; it is mixed to mono and resampled to 24 kHz.",
            inputs=[
                Tokenizer.Input("speech_tokenizer", tooltip="From a loader's speech_tokenizer output."),
                io.Audio.Input("audio", tooltip="Audio to encode; every clip of a batch is encoded."),
            ],
            outputs=[Codes.Output("codes", display_name="codes",
                                  tooltip="Speech codes, one [frames, 16] item per clip.")],
        )

    @classmethod
    def execute(cls, speech_tokenizer, audio) -> io.NodeOutput:
        clips = audio_clips(audio)
        tok = speech_tokenizer.ready()
        return io.NodeOutput(speech_codes.SpeechCodes([speech_codes.encode(tok, w, sr) for w, sr in clips]))


class QwenTTSDecodeCodes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSDecodeCodes",
            display_name="Qwen3-TTS Decode Codes to Audio",
            category=CATEGORY,
            description="Turns Qwen3-TTS speech codes (from Encode or a generation node) into 24 kHz audio.",
            inputs=[
                Tokenizer.Input("speech_tokenizer", tooltip="From a loader's speech_tokenizer output."),
                Codes.Input("codes", tooltip="Speech codes from Encode Audio or a generation node."),
            ],
            outputs=audio_outputs(),
        )

    @classmethod
    def execute(cls, speech_tokenizer, codes) -> io.NodeOutput:
        tok = speech_tokenizer.ready()
        progress = FrameProgress()    # its on_decode: Cancel stops a long decode between chunks
        wavs = run_interruptible(lambda: speech_codes.decode(tok, codes, on_chunk=progress.on_decode))
        batch, items = to_audio(wavs)
        return io.NodeOutput(batch, items)
