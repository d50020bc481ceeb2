"""Training a new speaker: a dataset of recordings + transcripts, and a Base model trained into a
CustomVoice model under models/qwen-tts/ (qwen_tts_core.finetune does the work)."""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

from comfy_api.latest import io
from qwen_tts_core.errors import InputError
from qwen_tts_core.finetune import (TrainConfig, VoiceDataset, codec_fingerprint, encode, preflight,
                                    reference_clip, scan, train)
from qwen_tts_core.finetune.output import check_name
from qwen_tts_core.finetune.dataset import AUDIO_EXTENSIONS
from qwen_tts_core.finetune.trainer import IF_EXISTS, METHODS, OPTIMIZERS, memory_needed
from qwen_tts_core.paths import resolve

from . import folders, models
from .progress import StepProgress, run_interruptible
from .types import CATEGORY, LANGUAGES, Model, model_input, validation_result

log = logging.getLogger("qwen_tts_nodes")

Dataset = io.Custom("QWEN_TTS_DATASET")      # qwen_tts_core.finetune.VoiceDataset


def dataset_path(folder: str) -> Path:
    """A folder (or .jsonl) inside ComfyUI's input/ folder, named relative to it (any path with
    QWEN_TTS_ALLOW_ANY_PATH=1): the pack's path policy, qwen_tts_core.paths."""
    if not isinstance(folder, str) or not folder.strip():
        raise InputError("Type the dataset folder: a folder name inside ComfyUI's input/ folder, e.g. "
                         "my_dataset for input/my_dataset.")
    return resolve(folder.strip(), folders.input_roots(), what="the dataset folder")


AUTO_RATE = "auto"


def learning_rate_value(text) -> float | None:
    """Train Voice's learning_rate: "auto" (or 0, as workflows saved with the old number widget
    hold) -> None, the method's own rate; otherwise the typed rate, above 0 and at most 1."""
    s = str(text).strip()
    if s.lower() == AUTO_RATE:
        return None
    try:
        rate = float(s)
    except ValueError:
        rate = None
    if rate is None or not math.isfinite(rate) or not 0 <= rate <= 1:
        raise InputError(f"learning_rate {s!r}: type {AUTO_RATE} (the method's own rate) or a number above 0 and "
                         "at most 1, e.g. 5e-5.")
    return rate or None


def loss_curve(points: list[tuple[int, float]], steps: int, epoch: int, epochs: int,
               size: tuple[int, int] = (512, 300)):
    """The training loss so far as a picture for the node's preview: (step, loss) points on a
    step axis of the whole run, a dotted line at each finished epoch, the first and last loss."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 46, w - 12, 28, h - 24
    image = Image.new("RGB", size, (32, 32, 32))
    draw = ImageDraw.Draw(image)
    draw.rectangle((left, top, right, bottom), outline=(90, 90, 90))
    finite = [(step, loss) for step, loss in points if math.isfinite(loss)]   # a diverged step draws no point
    lo, hi = (min(v for _, v in finite), max(v for _, v in finite)) if finite else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def xy(step, loss):
        return (left + (right - left) * step / max(steps, 1), bottom - (bottom - top) * (loss - lo) / span)

    per_epoch = steps / max(epochs, 1)
    for e in range(1, epoch + 1):
        x = left + (right - left) * e * per_epoch / max(steps, 1)
        for y in range(top, bottom, 6):
            draw.line((x, y, x, min(y + 2, bottom)), fill=(110, 110, 110))
    line = [xy(step, loss) for step, loss in finite]
    if len(line) > 1:
        draw.line(line, fill=LOSS_COLOUR, width=2)
    elif line:
        draw.ellipse((line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2), fill=LOSS_COLOUR)
    draw.text((left, 8), f"loss {points[0][1]:.4f} -> {points[-1][1]:.4f}   epoch {epoch}/{epochs}",
              fill=(230, 230, 230))
    draw.text((4, top), f"{hi:.3g}", fill=(170, 170, 170))
    draw.text((4, bottom - 10), f"{lo:.3g}", fill=(170, 170, 170))
    draw.text((left, bottom + 6), f"step {points[-1][0]}/{steps}", fill=(170, 170, 170))
    return image


LOSS_COLOUR = (110, 200, 255)


class QwenTTSVoiceDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSVoiceDataset",
            display_name="Qwen3-TTS Voice Dataset",
            category=CATEGORY,
            description="Recordings of one speaker with their transcripts, checked clip by clip, for "
                        "Train Voice. Clips that cannot be used are skipped and listed with the reason.",
            is_output_node=True,
            inputs=[
                io.String.Input("folder", default="my_voice_dataset",
                                tooltip="A folder inside ComfyUI's input/ folder (my_dataset for "
                                        "input/my_dataset; other paths only with QWEN_TTS_ALLOW_ANY_PATH=1) with "
                                        "name.wav + name.txt pairs (the .txt holds what is said), an "
                                        "LJSpeech-style metadata.csv, or a .jsonl file in the official "
                                        "recipe's format. 1-30 s per clip; 5-30 minutes in all works well."),
                io.Combo.Input("language", options=LANGUAGES, default="Auto",
                               tooltip="Language of the recordings (a .jsonl may set it per clip)."),
                io.String.Input("reference_clip", default="",
                                tooltip="The clip whose voice embedding becomes the speaker (a path "
                                        "relative to the dataset folder). Empty: the longest clip."),
            ],
            outputs=[Dataset.Output("dataset", display_name="dataset", tooltip="The checked clips, for Train Voice."),
                     io.String.Output("report", display_name="report",
                                      tooltip="Clip count, total minutes, and every rejected clip with the reason.")],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, language, reference_clip):
        # run again when a file in the folder is added, removed or changed
        try:
            root = dataset_path(folder)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                         and ".qwen-tts-codes" not in p.parts)
            h = hashlib.sha256()
            for p in files:
                st = p.stat()
                h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
            return h.hexdigest()
        except (OSError, InputError):
            return float("nan")

    @classmethod
    def execute(cls, folder, language, reference_clip) -> io.NodeOutput:
        roots = folders.input_roots()
        root = dataset_path(folder)
        ref = None
        if reference_clip and reference_clip.strip():
            ref = resolve(reference_clip.strip(), roots, base=root if root.is_dir() else root.parent,
                          what="the reference clip", relative_to="the dataset folder")
            if ref.suffix.lower() not in AUDIO_EXTENSIONS:
                raise InputError(f"The reference clip {reference_clip!r} is not an audio file "
                                 f"({', '.join(AUDIO_EXTENSIONS)}).")
        data = scan(root, language.lower(), ref, roots)
        report = data.report()
        log.info("Qwen3-TTS voice dataset: %s", report)
        return io.NodeOutput(data, report, ui={"text": [report]})


class QwenTTSTrainVoice(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSTrainVoice",
            display_name="Qwen3-TTS Train Voice",
            category=CATEGORY,
            description="Trains a Base model on a voice dataset into a CustomVoice model with one new "
                        "speaker, saved in models/qwen-tts/<output name>/ after every epoch (Cancel keeps "
                        "the last finished epoch). Outputs the trained model for Custom Voice.",
            is_output_node=True,
            inputs=[
                model_input("A Base model (Qwen3-TTS-12Hz-1.7B-Base or -0.6B-Base); it is not changed: "
                            "training works on its own copy of the weights."),
                Dataset.Input("dataset", tooltip="From Voice Dataset."),
                io.String.Input("speaker_name", default="my_voice",
                                tooltip="Name of the new speaker (letters, digits, '_' and '-'), as Custom "
                                        "Voice will know it (in lower case)."),
                io.String.Input("output_name", default="",
                                tooltip="Folder under models/qwen-tts/ for the trained model. Empty: the "
                                        "speaker name."),
                io.Combo.Input("method", options=list(METHODS), default="lora",
                               tooltip="lora: small adapters on every layer, merged into the weights when "
                                       "saving (needs peft; fits 8 GB GPUs). full: trains every weight "
                                       "(16 GB+ for 0.6B, 32 GB+ for 1.7B; see the README table)."),
                io.Int.Input("epochs", default=3, min=1, max=1000,
                             tooltip="Passes over the dataset; the model is saved after each."),
                # text, not a number widget: the default reads "auto" rather than 0.000000. Workflows
                # saved with the number widget hold 0 there, which still means auto.
                io.String.Input("learning_rate", default=AUTO_RATE,
                                tooltip=f"{AUTO_RATE}: the method's own rate ({TrainConfig('x', method='lora').lr:g} "
                                        f"for LoRA, {TrainConfig('x', method='full').lr:g} for full "
                                        "fine-tuning). Or type a rate, e.g. 5e-5."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Clips per step. More needs more memory."),
                io.Int.Input("gradient_accumulation", default=1, min=1, max=256,
                             tooltip="Steps whose gradients are summed before the weights change: a "
                                     "larger effective batch without more memory."),
                io.Boolean.Input("gradient_checkpointing", default=False,
                                 tooltip="Less memory for activations, ~30% slower steps."),
                io.Combo.Input("optimizer", options=list(OPTIMIZERS), default="adamw",
                               tooltip="adamw8bit keeps the optimizer state in 8 bits (needs "
                                       "bitsandbytes): much less memory for full fine-tuning."),
                io.Int.Input("lora_rank", default=16, min=1, max=256, tooltip="Size of the LoRA adapters."),
                io.Combo.Input("if_exists", options=list(IF_EXISTS), default="stop",
                               tooltip="When the output folder exists: stop (an error, nothing changed), "
                                       "resume its training (e.g. after Cancel, or with more epochs), or "
                                       "overwrite it (replaced when the first new epoch is saved)."),
                io.Int.Input("training_seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the clip order (and LoRA's start): the same seed and "
                                     "settings train the same model."),
            ],
            outputs=[Model.Output("trained_model", display_name="model",
                                  tooltip="The trained CustomVoice model, loaded; connect it to Custom Voice."),
                     io.String.Output("speaker", display_name="speaker",
                                      tooltip="The new speaker's name; connect it to Custom Voice's speaker_name."),
                     io.String.Output("report", display_name="report",
                                      tooltip="Where the model was saved, epochs, steps and the loss.")],
        )

    @classmethod
    def validate_inputs(cls, learning_rate=None):
        return validation_result(learning_rate_value, learning_rate)

    @classmethod
    def execute(cls, model, dataset, speaker_name, output_name, method, epochs, learning_rate, batch_size,
                gradient_accumulation, gradient_checkpointing, optimizer, lora_rank, if_exists,
                training_seed) -> io.NodeOutput:
        if not isinstance(dataset, VoiceDataset):
            raise InputError("Connect a Voice Dataset node to 'dataset'.")
        if model is None or not hasattr(model, "tts"):
            raise InputError("Connect a Qwen3-TTS Model Loader with a Base model to 'model'.")
        name = check_name(speaker_name)
        folder_name = check_name(output_name.strip() if output_name and output_name.strip() else name,
                                 "output folder name")
        out = folders.model_roots()[0] / folder_name
        base = Path(model.tts.folder)
        cfg = TrainConfig(name, int(epochs), method, learning_rate_value(learning_rate), int(batch_size),
                          int(gradient_accumulation), gradient_checkpointing=bool(gradient_checkpointing),
                          optimizer=optimizer, lora_rank=int(lora_rank), lora_alpha=2.0 * int(lora_rank),
                          seed=int(training_seed))
        preflight(base, out, cfg, if_exists)
        progress = StepProgress()
        codec = model.tokenizer().ready()
        items = encode(dataset, codec, codec_fingerprint(base), folders.speech_codes_cache(), on_clip=lambda i, n: (
            progress.should_stop(), progress.update(i, n, f"speech codes {i}/{n}")))
        device = model.patcher.load_device
        _, estimate = memory_needed(base, items, cfg, device)
        models.free_memory(estimate.total, device)

        losses = []

        def on_progress(p):
            left = "" if p.seconds_left is None else f", ~{p.seconds_left / 60:.1f} min left"
            losses.append((p.step, p.loss))
            # the loss curve as the node's preview, once per finished epoch
            epoch_done = p.step == p.epoch * (p.steps // p.epochs)
            preview = ("PNG", loss_curve(losses, p.steps, p.epoch, p.epochs), None) if epoch_done else None
            progress.update(p.step, p.steps, f"epoch {p.epoch}/{p.epochs}, step {p.step}/{p.steps}, "
                                             f"loss {p.loss:.4f}{left}", preview=preview)

        result = run_interruptible(lambda: train(
            base, items, reference_clip(dataset), out, cfg, device, if_exists, dataset.fingerprint(),
            on_progress=on_progress, should_stop=progress.should_stop))
        report = (f"{out}: speaker '{result.speaker}', {result.epochs_done} epochs, {result.steps} steps, "
                  f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}" if result.losses else f"{out}: nothing trained")
        log.info("Qwen3-TTS Train Voice: %s", report)
        trained = models.load_model_handle(folder_name, "auto", "auto" if device.type != "cpu" else "cpu")
        return io.NodeOutput(trained, result.speaker, report, ui={"text": [report]})


NODES = [QwenTTSVoiceDataset, QwenTTSTrainVoice]
