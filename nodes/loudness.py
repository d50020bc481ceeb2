"""Output loudness: the Normalize Loudness node for any AUDIO, and the loudness option of the
generation and long-form nodes (qwen_tts_core.loudness does the work)."""
from __future__ import annotations

import logging

import torch

from comfy_api.latest import io
from qwen_tts_core import loudness as core
from qwen_tts_core.errors import InputError

from .progress import stop_if_interrupted
from .types import CATEGORY, audio_clips

log = logging.getLogger("qwen_tts_nodes")

PRESETS = list(core.PRESETS)
_HOW = ("Integrated loudness per ITU-R BS.1770-4 / EBU R128 (pyloudnorm's meter), with the true peak "
        "kept under -1 dBTP (a look-ahead limiter touches only the peaks that would go over).")


def loudness_input() -> io.Input:
    """The generation and long-form nodes' option (appended last, optional: older workflows load
    with it off, and their audio stays as it was)."""
    return io.Combo.Input("loudness", options=PRESETS, default="off", optional=True,
                          tooltip="Output loudness. off: as the model makes it. -16 LUFS: web and "
                                  "podcasts; -23 LUFS: broadcast (EBU R128); -14 LUFS: streaming. "
                                  + _HOW)


def per_line_input() -> io.Input:
    return io.Boolean.Input("loudness_per_line", default=False, optional=True,
                            tooltip="With a loudness chosen: off = the whole track is set to it and the "
                                    "lines keep their relative levels; on = every line is set to it on "
                                    "its own, so all speakers sound equally loud.")


def check_preset(preset) -> float | None:
    return core.target_of(preset)


def level_clips(waves: list[torch.Tensor], rate: int, preset: str) -> list[torch.Tensor]:
    """Each generated clip at the preset's loudness; a clip that cannot be measured (shorter than
    a 400 ms block, or silent) is kept as it is, with a warning: the speech is never lost."""
    target = check_preset(preset)
    if target is None:
        return waves
    out = []
    for i, w in enumerate(waves):
        try:
            done = core.normalize(w, rate, target, check_interrupt=stop_if_interrupted, what=f"clip {i + 1}")
        except InputError as e:
            log.warning("Qwen3-TTS: loudness left as it is for clip %d: %s", i + 1, e)
            out.append(w)
            continue
        log.info("Qwen3-TTS clip %d: %s", i + 1, done.summary())
        out.append(done.audio[0])
    return out


def level_track(audio: torch.Tensor, rate: int, preset: str, spans=None) -> tuple[torch.Tensor, str | None]:
    """A long-form track ([samples]) at the preset's loudness, as a whole or per span (line);
    with the line for the node's report. A track that cannot be measured is kept as it is."""
    target = check_preset(preset)
    if target is None:
        return audio, None
    try:
        done = core.normalize(audio, rate, target, spans=spans, check_interrupt=stop_if_interrupted,
                              what="track")
    except InputError as e:
        return audio, f"loudness left as it is: {e}"
    return done.audio[0], done.summary()


class QwenTTSNormalizeLoudness(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSNormalizeLoudness",
            display_name="Qwen3-TTS Normalize Loudness",
            category=CATEGORY,
            description="Sets any audio to a standard loudness (each clip of a batch on its own). " + _HOW,
            inputs=[
                io.Audio.Input("audio", tooltip="Any audio: speech from the Qwen3-TTS nodes, Load Audio, "
                                                "a video's sound. At least 0.4 s long, any sample rate, "
                                                "mono to 5 channels."),
                io.Combo.Input("loudness", options=PRESETS[1:], default=PRESETS[1],
                               tooltip="-16 LUFS: web and podcasts; -23 LUFS: broadcast (EBU R128); "
                                       "-14 LUFS: streaming services."),
                io.Float.Input("true_peak_ceiling", default=core.TRUE_PEAK_CEILING, min=-9.0, max=0.0, step=0.1,
                               tooltip="The highest true peak allowed, in dBTP (-1 is what EBU R128 and "
                                       "the streaming services ask for; lower leaves room for lossy "
                                       "encoding)."),
            ],
            outputs=[io.Audio.Output("normalized_audio", display_name="audio",
                                     tooltip="The audio at the chosen loudness, same rate and length."),
                     io.String.Output("report", display_name="report",
                                      tooltip="Loudness before and after, the true peak, and how much the "
                                              "limiter took off the highest peaks.")],
        )

    @classmethod
    def execute(cls, audio, loudness, true_peak_ceiling) -> io.NodeOutput:
        target = check_preset(loudness)
        if target is None:
            raise InputError("Choose a loudness for Normalize Loudness (to keep the audio as it is, bypass the node).")
        clips = audio_clips(audio)
        rate = audio["sample_rate"]
        levelled, lines = [], []
        for i, (wav, _) in enumerate(clips):
            what = f"clip {i + 1}" if len(clips) > 1 else "audio"
            done = core.normalize(wav, rate, target, ceiling=float(true_peak_ceiling),
                                  check_interrupt=stop_if_interrupted, what=what)
            levelled.append(done.audio)
            lines.append((f"clip {i + 1}: " if len(clips) > 1 else "") + done.summary())
        return io.NodeOutput({"waveform": torch.stack(levelled), "sample_rate": int(rate)}, "\n".join(lines))


NODES = [QwenTTSNormalizeLoudness]
