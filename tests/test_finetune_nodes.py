"""Voice Dataset and Train Voice on the ComfyUI-compatible runtime: the report's values, training
through the nodes until the new speaker says the training codes (via Custom Voice), the new
folder in the loader's list without a restart, Cancel within one step keeping the last epoch."""
import json
import os
import shutil

import pytest
import torch

import comfy_env
from conftest import AUDIO
from qwen_tts_core import speech_codes
from qwen_tts_core.audio import read_wav, write_wav
from qwen_tts_core.errors import InputError

BASE = "Qwen3-TTS-12Hz-1.7B-Base"
TEXT = "The quick brown fox jumps over the lazy dog."
CLIPS = 20
pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = dict(speaker_name="Narrator", output_name="", method="lora", epochs=3, learning_rate="0.01", batch_size=1,
             gradient_accumulation=1, gradient_checkpointing=False, optimizer="adamw", lora_rank=16,
             if_exists="stop", training_seed=0)


@pytest.fixture(scope="module")
def rt():
    """The runtime; the model folders these tests train are removed afterwards (other test modules
    list the models folder)."""
    runtime = comfy_env.runtime()
    root = runtime.model_roots()[0]
    before = set(root.iterdir())
    yield runtime
    for folder in set(root.iterdir()) - before:
        shutil.rmtree(folder)


def run(N, node, **inputs):
    return comfy_env.run_node(N[node], **inputs)


@pytest.fixture(scope="module")
def dataset_folder():
    """input/voice_nodes/: 20 copies of one 1.6 s utterance (encoded once: same bytes, one cache
    entry) and one clip too short to use."""
    import folder_paths

    folder = comfy_env.Path(folder_paths.get_input_directory()) / "voice_nodes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    write_wav(folder / "clip_00.wav", wav[0, : int(1.6 * rate)], rate)
    for i in range(CLIPS):
        if i:
            os.link(folder / "clip_00.wav", folder / f"clip_{i:02}.wav")
        (folder / f"clip_{i:02}.txt").write_text(TEXT)
    write_wav(folder / "tiny.wav", wav[0, : rate // 2], rate)
    (folder / "tiny.txt").write_text("Hi.")
    yield folder
    shutil.rmtree(folder)


def test_voice_dataset_reports_clips_minutes_and_rejects(N, dataset_folder):
    data, report = run(N, "QwenTTSVoiceDataset", folder="voice_nodes", language="English", reference_clip="")
    assert len(data.clips) == CLIPS and {c.language for c in data.clips} == {"english"}
    assert report.splitlines() == [
        f"20 clips, 32.0 s of speech (folder layout in {dataset_folder}); speaker reference: clip_00.wav",
        "1 rejected:", "  tiny.wav: shorter than 1 s (0.50 s)"]
    same, _ = run(N, "QwenTTSVoiceDataset", folder="./voice_nodes/", language="English",
                  reference_clip="clip_07.wav")                                  # chosen reference
    assert [c.name for c in same.clips] == [c.name for c in data.clips]
    assert same.ref_audio == dataset_folder / "clip_07.wav"
    for bad, message in (("../outside", "must lie inside ComfyUI's input folder"), ("", "Type the dataset folder"),
                         ("no_such_folder", "Dataset not found")):
        with pytest.raises(InputError, match=message):
            run(N, "QwenTTSVoiceDataset", folder=bad, language="Auto", reference_clip="")
    with pytest.raises(InputError, match="is not an audio file"):
        run(N, "QwenTTSVoiceDataset", folder="voice_nodes", language="Auto", reference_clip="clip_00.txt")


def test_train_voice_then_speak_the_training_codes(N, rt, dataset_folder, progress, progress_previews):
    data, _ = run(N, "QwenTTSVoiceDataset", folder="voice_nodes", language="Auto", reference_clip="")
    (base, *_) = run(N, "QwenTTSModelLoader", model_name=BASE, dtype="fp32", device="cpu")
    assert "Narrator" not in N["QwenTTSModelLoader"].define_schema().inputs[0].options
    model, speaker, report = run(N, "QwenTTSTrainVoice", model=base, dataset=data, **TRAIN)
    assert speaker == "narrator" and model.tts.speakers == ["narrator"] and model.model_type == "custom_voice"
    folder = rt.model_roots()[0] / "Narrator"
    assert report.startswith(f"{folder}: speaker 'narrator', 3 epochs, 60 steps, loss ")
    first, last = (float(x) for x in report.rsplit("loss ", 1)[1].split(" -> "))
    assert last < 0.02 < first
    # the progress bar: speech codes clip by clip, then every training step with the loss under it
    bar, texts = progress
    assert bar == [(i, CLIPS) for i in range(1, CLIPS + 1)] + [(s, 60) for s in range(1, 61)]
    assert texts[:CLIPS] == [f"speech codes {i}/{CLIPS}" for i in range(1, CLIPS + 1)]
    steps = texts[CLIPS:]
    assert [t.split(", loss")[0] for t in steps] == [f"epoch {1 + (s - 1) // CLIPS}/3, step {s}/60"
                                                      for s in range(1, 61)]
    assert steps[0].startswith(f"epoch 1/3, step 1/60, loss {first:.4f}, ~")
    assert steps[-1] == f"epoch 3/3, step 60/60, loss {last:.4f}, ~0.0 min left"
    # the loss curve as the node's preview: one PNG at the end of each epoch, redrawn with the losses
    assert [value for value, _ in progress_previews] == [20, 40, 60]
    images = [preview[1] for _, preview in progress_previews]
    assert all(preview[0] == "PNG" and preview[2] is None for _, preview in progress_previews)
    assert len({im.tobytes() for im in images}) == 3
    assert [curve_span(im) for im in images] == sorted(curve_span(im) for im in images)   # the line grows
    # the loader lists the new folder at once (ComfyUI re-reads the schema when the page refreshes)
    assert "Narrator" in N["QwenTTSModelLoader"].define_schema().inputs[0].options
    # greedy Custom Voice with the wired speaker name says exactly the training codes
    want = speech_codes.encode(base.tts.codec, *read_wav(dataset_folder / "clip_00.wav"))
    out = run(N, "QwenTTSCustomVoice", model=model, text=TEXT, language="Auto", speaker="Vivian", instruction="",
              one_text_per_line=False, seed=0, temperature=0.0, top_k=50, top_p=1.0, repetition_penalty=1.05,
              max_seconds=4.0, speaker_name=speaker)
    assert torch.equal(out[2].items[0], want)
    # the base model the node was given is unchanged (training used its own copy)
    assert base.model_type == "base" and base.tts.model.speaker_encoder is not None
    # a second run into the same folder needs an explicit choice
    with pytest.raises(InputError, match="already exists"):
        run(N, "QwenTTSTrainVoice", model=base, dataset=data, **TRAIN)
    again, _, report = run(N, "QwenTTSTrainVoice", model=base, dataset=data, **{**TRAIN, "if_exists": "resume"})
    assert report.endswith(f"-> {last:.4f}") and again.tts.speakers == ["narrator"]   # nothing left to train


def curve_span(image) -> tuple[int, int]:
    """First and last pixel column where the loss line is drawn."""
    import numpy as np

    from_node = np.asarray(image)
    columns = np.where((from_node == LOSS_COLOUR).all(axis=2).any(axis=0))[0]
    return int(columns.min()), int(columns.max())


def line_height(image, column: int) -> float:
    """Mean pixel row of the loss line in one column (rows grow downwards)."""
    import numpy as np

    rows = np.where((np.asarray(image)[:, column] == LOSS_COLOUR).all(axis=1))[0]
    return float(rows.mean())


LOSS_COLOUR = (110, 200, 255)


def test_loss_curve_draws_the_losses_on_the_whole_runs_step_axis(N):
    curve = __import__(N["QwenTTSTrainVoice"].__module__, fromlist=["loss_curve"]).loss_curve
    falling = curve([(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5)], steps=8, epoch=2, epochs=4)
    rising = curve([(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0)], steps=8, epoch=2, epochs=4)
    assert falling.size == (512, 300) and falling.mode == "RGB"
    (a, b), (c, d) = curve_span(falling), curve_span(rising)
    assert abs(a - c) <= 1 and abs(b - d) <= 1
    assert 160 < b - a < 180 and 95 < a < 110          # steps 1..4 of 8 on a ~450 px wide plot
    assert line_height(falling, a + 1) < line_height(falling, b - 1)        # high loss at the top
    assert line_height(rising, a + 1) > line_height(rising, b - 1)
    later = curve([(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5), (5, 0.4), (6, 0.3)], steps=8, epoch=3, epochs=4)
    assert curve_span(later)[0] == a and curve_span(later)[1] > b
    one = curve([(5, 1.0)], steps=8, epoch=1, epochs=4)                       # the first step of a resumed run
    assert curve_span(one)[1] - curve_span(one)[0] <= 5
    # a diverged step (nan, inf) is left out of the line instead of breaking the preview
    diverged = curve([(1, 3.0), (2, float("nan")), (3, 1.0), (4, float("inf"))], steps=8, epoch=2, epochs=4)
    assert abs(curve_span(diverged)[0] - a) <= 1 and curve_span(diverged)[1] < b
    assert curve([(1, float("nan"))], steps=8, epoch=1, epochs=4).size == (512, 300)


def test_cancel_stops_within_one_step_and_keeps_the_last_epoch(N, rt, dataset_folder, monkeypatch):
    import comfy.model_management as mm
    from qwen_tts_core.finetune import objective, trainer

    data, _ = run(N, "QwenTTSVoiceDataset", folder="voice_nodes", language="Auto", reference_clip="")
    (base, *_) = run(N, "QwenTTSModelLoader", model_name=BASE, dtype="fp32", device="cpu")
    steps = []

    def batch_loss(*a, **k):
        steps.append(1)
        if len(steps) == 25:                                   # the user presses Cancel during step 25
            mm.interrupt_current_processing(True)
        return objective.batch_loss(*a, **k)

    monkeypatch.setattr(trainer, "batch_loss", batch_loss)
    settings = {**TRAIN, "speaker_name": "Cancelled", "method": "full", "epochs": 2}
    with pytest.raises(mm.InterruptProcessingException):
        run(N, "QwenTTSTrainVoice", model=base, dataset=data, **settings)
    assert len(steps) == 25 and not mm.processing_interrupted()
    folder = rt.model_roots()[0] / "Cancelled"
    state = json.loads((folder / "training" / "state.json").read_text())
    assert state["epochs_done"] == 1 and len(state["losses"]) == CLIPS           # epoch 1 kept, complete
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []
    _, _, report = run(N, "QwenTTSTrainVoice", model=base, dataset=data, **{**settings, "if_exists": "resume"})
    assert len(steps) == 25 + CLIPS and ", 2 epochs, 40 steps," in report        # resumed at epoch 2


def test_learning_rate_reads_auto_or_a_typed_rate_and_old_workflows_zero_means_auto(N, dataset_folder, monkeypatch):
    """The widget shows "auto" (it showed 0.000000 as a number); workflows saved with the number
    widget send 0 (ComfyUI turns it into the text "0" or "0.0"), which still means auto."""
    train_module = __import__(N["QwenTTSTrainVoice"].__module__, fromlist=["preflight"])
    node = N["QwenTTSTrainVoice"]
    assert next(i for i in node.define_schema().inputs if i.id == "learning_rate").default == "auto"
    data, _ = run(N, "QwenTTSVoiceDataset", folder="voice_nodes", language="Auto", reference_clip="")
    (base, *_) = run(N, "QwenTTSModelLoader", model_name=BASE, dtype="fp32", device="cpu")
    seen = []

    class Stop(Exception):
        pass

    def preflight(base_folder, out, cfg, if_exists):
        seen.append((cfg.learning_rate, cfg.lr))
        raise Stop

    monkeypatch.setattr(train_module, "preflight", preflight)
    for typed, method in (("auto", "lora"), (" AUTO ", "full"), (0, "lora"), (0.0, "full"), ("0", "lora"),
                          ("0.0", "full"), ("5e-5", "lora"), ("0.0003", "full"), (1e-3, "lora")):
        with pytest.raises(Stop):
            run(N, "QwenTTSTrainVoice", model=base, dataset=data, **{**TRAIN, "learning_rate": typed, "method": method})
    assert seen == [(None, 1e-4), (None, 2e-5), (None, 1e-4), (None, 2e-5), (None, 1e-4), (None, 2e-5),
                    (5e-5, 5e-5), (3e-4, 3e-4), (1e-3, 1e-3)]
    for bad in ("fast", "", "nan", "inf", "-1e-4", "2", "1e-4x"):
        message = (f"learning_rate {str(bad).strip()!r}: type auto (the method's own rate) or a number above 0 "
                   "and at most 1, e.g. 5e-5.")
        assert node.validate_inputs(learning_rate=bad) == message          # the prompt is refused up front
        with pytest.raises(InputError) as e:                                   # a value wired in is checked on run
            node.execute(model=base, dataset=data, **{**TRAIN, "learning_rate": bad})
        assert str(e.value) == message
    assert len(seen) == 9


def test_train_voice_refuses_a_custom_voice_base_and_bad_names(N, dataset_folder):
    data, _ = run(N, "QwenTTSVoiceDataset", folder="voice_nodes", language="Auto", reference_clip="")
    (custom, *_) = run(N, "QwenTTSModelLoader", model_name="Qwen3-TTS-12Hz-1.7B-CustomVoice", dtype="fp32",
                       device="cpu")
    from qwen_tts_core.errors import UnsupportedModeError
    with pytest.raises(UnsupportedModeError, match="Fine-tuning starts from a Base model"):
        run(N, "QwenTTSTrainVoice", model=custom, dataset=data, **TRAIN)
    (base, *_) = run(N, "QwenTTSModelLoader", model_name=BASE, dtype="fp32", device="cpu")
    for field, value, message in (("speaker_name", "../../etc", "Invalid speaker name"),
                                  ("output_name", "a/b", "Invalid output folder name"),
                                  ("output_name", BASE, "the base model's own folder")):
        with pytest.raises(InputError, match=message):
            run(N, "QwenTTSTrainVoice", model=base, dataset=data, **{**TRAIN, field: value})
    with pytest.raises(InputError, match="Connect a Voice Dataset"):
        run(N, "QwenTTSTrainVoice", model=base, dataset="not a dataset", **TRAIN)
