"""A mark that the speech is synthetic: the Watermark Speech and Detect Watermark nodes, and the
watermark switch of the generation and long-form nodes (qwen_tts_core.watermark: Meta's AudioSeal).

The weights live in models/audioseal/ (also the `audioseal` paths of extra_model_paths.yaml). Like
the loaders' checkpoints, they are downloaded only when a user runs a node with the download entry
chosen; a generation node with the switch on and no weights stops before generating, naming that
entry."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import io
from qwen_tts_core import watermark as core
from qwen_tts_core.errors import InputError

from .loudness import check_preset
from .progress import stop_if_interrupted
from .types import CATEGORY, audio_clips

log = logging.getLogger("qwen_tts_nodes")

FOLDER = "audioseal"                       # models/audioseal/
WEIGHTS = "AudioSeal 16-bit"
DOWNLOAD = f"{WEIGHTS} (download, {core.SIZE})"
_HOW_TO_GET = (f"Choose '{DOWNLOAD}' as the weights of a Qwen3-TTS Watermark Speech or Detect Watermark node "
               "and run it once (it downloads them from Hugging Face, facebook/audioseal, hashes checked). ")


def register_folder() -> None:
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


def roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(FOLDER)]


def weights_folder() -> Path | None:
    """The first models/audioseal folder that holds both weight files."""
    return next((r for r in roots() if not core.missing(r)), None)


def weights_choices() -> list[str]:
    return [WEIGHTS] if weights_folder() is not None else [DOWNLOAD]


def weights_input() -> io.Input:
    return io.Combo.Input("weights", options=weights_choices(), default=weights_choices()[0],
                          tooltip=f"AudioSeal's published 16-bit generator and detector (Meta, MIT), "
                                  f"{core.SIZE}, in models/audioseal/. Until they are there this reads "
                                  f"'{DOWNLOAD}': running the node downloads them (every file's sha256 is "
                                  "checked against the one published on the Hub), then press R.")


def watermark_input() -> io.Input:
    """The generation and long-form nodes' switch (appended last, optional, off by default)."""
    return io.Boolean.Input("watermark", default=False, optional=True,
                            tooltip=f"Adds an inaudible AudioSeal watermark (message {core.PACK_MESSAGE}, "
                                    f"0x{core.PACK_MESSAGE:04X}) that Detect Watermark can find: a "
                                    "machine-readable mark that the speech is synthetic (EU AI Act art. 50(2)). "
                                    f"Needs the AudioSeal weights in models/audioseal/ (see the Watermark "
                                    "Speech node). Not proof against a determined remover: see the README.")


_MODELS: dict = {}


def _model(kind: str, choice: str | None = None):
    """The generator or detector (loaded once per weight file), downloading first when the
    download entry is chosen; without weights, a message naming the entry."""
    folder = weights_folder()
    if folder is None and choice == DOWNLOAD:
        targets = roots()
        if not targets:
            raise InputError(f"No models/{FOLDER} folder is registered to download the watermark weights into.")
        bar = comfy.utils.ProgressBar(1)
        folder = core.download(targets[0], check_interrupt=stop_if_interrupted,
                               on_progress=lambda done, total: bar.update_absolute(done, max(total, 1)))
    if folder is None:
        core.check_present(roots()[0] if roots() else Path("models") / FOLDER, _HOW_TO_GET)
    load = core.load_generator if kind == "generator" else core.load_detector
    path = folder / (core.GENERATOR if kind == "generator" else core.DETECTOR).filename
    st = path.stat()
    key = (kind, str(path.absolute()), st.st_size, st.st_mtime_ns)
    if key not in _MODELS:
        _MODELS[key] = load(folder, stop_if_interrupted)
    return _MODELS[key]


def _check_choice(weights) -> None:
    if weights not in (WEIGHTS, DOWNLOAD):
        raise InputError(f"Unknown watermark weights {weights!r}; choose '{WEIGHTS}' or '{DOWNLOAD}'.")


def generator_for(on: bool) -> core.Watermarker | None:
    """For the generation and long-form nodes, before they generate: the watermarker when the
    switch is on (a clear stop now if the weights are missing, so no speech is made and lost)."""
    if not on:
        return None
    return core.Watermarker(generator=_model("generator"))


def before_generating(loudness: str, watermark: bool) -> core.Watermarker | None:
    """For the generation and long-form nodes, before they generate: a wrong loudness preset or
    missing watermark weights stop the node before any speech is made (and lost); the
    watermarker when the switch is on."""
    check_preset(loudness)
    return generator_for(watermark)


def _progress():
    bar = comfy.utils.ProgressBar(1)
    return lambda done, total: bar.update_absolute(done, max(total, 1))


def mark(marker: core.Watermarker | None, wave: torch.Tensor, rate: int, message: int = core.PACK_MESSAGE):
    """`wave` ([T] or [C, T]) watermarked on ComfyUI's device, or as it is without a marker."""
    if marker is None:
        return wave
    return marker.embed(wave, rate, message, device=mm.get_torch_device(),
                        check_interrupt=stop_if_interrupted, on_progress=_progress())


def note(marker) -> str | None:
    return None if marker is None else f"watermark: AudioSeal, message {core.PACK_MESSAGE} (0x{core.PACK_MESSAGE:04X})"


class QwenTTSWatermark(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSWatermark",
            display_name="Qwen3-TTS Watermark Speech",
            category=CATEGORY,
            description="Adds an inaudible AudioSeal watermark carrying a 16-bit message to any audio: a "
                        "machine-readable mark that the speech is synthetic, which Detect Watermark reads "
                        "back. Same rate and length out; the mark lies below 8 kHz.",
            inputs=[
                io.Audio.Input("audio", tooltip="The speech to mark (any sample rate; each channel and clip "
                                                "is marked)."),
                io.Int.Input("message", default=core.PACK_MESSAGE, min=0, max=(1 << core.BITS) - 1,
                             tooltip="A 16-bit number (0-65535) carried by the mark, e.g. to tell your "
                                     f"projects or model versions apart. Default {core.PACK_MESSAGE} "
                                     f"(0x{core.PACK_MESSAGE:04X}), what the generation nodes' watermark "
                                     "switch uses."),
                weights_input(),
            ],
            outputs=[io.Audio.Output("marked_audio", display_name="audio", tooltip="The marked audio.")],
        )

    @classmethod
    def validate_inputs(cls, weights=None):
        # the download entry becomes the plain name once downloaded: both are accepted
        return True

    @classmethod
    def execute(cls, audio, message, weights) -> io.NodeOutput:
        _check_choice(weights)
        clips = audio_clips(audio)
        marker = core.Watermarker(generator=_model("generator", weights))
        rate = int(audio["sample_rate"])
        marked = [mark(marker, wav, rate, int(message)) for wav, _ in clips]
        return io.NodeOutput({"waveform": torch.stack(marked), "sample_rate": rate})


class QwenTTSDetectWatermark(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSDetectWatermark",
            display_name="Qwen3-TTS Detect Watermark",
            category=CATEGORY,
            description="Looks for an AudioSeal watermark in any audio and reads its 16-bit message.",
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to check (any sample rate; a batch is checked clip "
                                                "by clip)."),
                weights_input(),
            ],
            outputs=[
                io.Float.Output("score", display_name="score",
                                tooltip="Share of the audio the detector marks as watermarked (0-1; above 0.5 "
                                        "counts as marked). For a batch: the lowest clip's."),
                io.Int.Output("message", display_name="message",
                              tooltip="The 16-bit message read from the mark (meaningless when there is "
                                      "none). For a batch: that of the clip with the lowest score."),
                io.String.Output("report", display_name="report",
                                 tooltip="Found or not, the message in decimal, hex and bits, per clip."),
            ],
        )

    @classmethod
    def validate_inputs(cls, weights=None):
        return True

    @classmethod
    def execute(cls, audio, weights) -> io.NodeOutput:
        _check_choice(weights)
        clips = audio_clips(audio)
        detector = core.Watermarker(detector=_model("detector", weights))
        rate = int(audio["sample_rate"])
        found = [detector.detect(wav, rate, device=mm.get_torch_device(),
                                 check_interrupt=stop_if_interrupted, on_progress=_progress())
                 for wav, _ in clips]
        lowest = min(found, key=lambda d: d.score)
        report = "\n".join((f"clip {i + 1}: " if len(found) > 1 else "") + d.summary() for i, d in enumerate(found))
        return io.NodeOutput(lowest.score, lowest.message, report)


NODES = [QwenTTSWatermark, QwenTTSDetectWatermark]
