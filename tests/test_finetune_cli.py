"""python -m qwen_tts_core.finetune: train, Ctrl-C (a real SIGINT) keeping the last finished
epoch, resume, refusals, and the memory table."""
import json
import os
import re
import signal

import pytest

from conftest import AUDIO, MODELS
from qwen_tts_core.api import QwenTTS
from qwen_tts_core.audio import read_wav, write_wav
from qwen_tts_core.finetune import memory, objective, trainer
from qwen_tts_core.finetune.__main__ import main

BASE = str(MODELS / "Tiny-Base")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recordings")
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    for i, (a, b) in enumerate(((0, 1.5), (1.5, 3.0))):
        write_wav(folder / f"c{i}.wav", wav[0, int(a * rate): int(b * rate)], rate)
        (folder / f"c{i}.txt").write_text(["The quick brown fox.", "Jumps over the dog."][i])
    return folder


def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "voice"
    args = ["--base", BASE, "--data", str(data), "--name", "voice", "--out", str(out), "--epochs", "3", "--lr", "3e-3"]
    calls = []

    def batch_loss(*a, **k):
        calls.append(1)
        if len(calls) == 3:                                   # epoch 2, first step: Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return objective.batch_loss(*a, **k)

    monkeypatch.setattr(trainer, "batch_loss", batch_loss)
    handler = signal.getsignal(signal.SIGINT)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Stopping after this step" in err and f"Epoch 1 is saved in {out}; resume to continue" in err
    assert json.loads((out / "training" / "state.json").read_text())["epochs_done"] == 1
    assert signal.getsignal(signal.SIGINT) is handler                        # handler restored

    assert main(args) == 2                                     # exists: an explicit choice is needed
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith(f"2 clips, 3.0 s of speech (folder layout in {data})")
    assert f"wrote {out}: speaker 'voice', 3 epochs, 6 steps" in printed.out
    assert re.search(r"epoch 3/3 \[#{24}\] step 6/6 loss \d+\.\d{4} ~00:00 left", printed.err)
    assert len(calls) == 3 + 4                                 # epochs 2 and 3 again, nothing more
    tts = QwenTTS.from_pretrained(out, dtype="fp32", device="cpu", speech_tokenizer=False)
    assert tts.model_type == "custom_voice" and tts.speakers == ["voice"]


def test_refusals_exit_with_a_message(data, tmp_path, capsys):
    assert main(["--base", str(MODELS / "Tiny-CustomVoice"), "--data", str(data), "--name", "x",
                 "--out", str(tmp_path / "x")]) == 2
    assert "error: Fine-tuning starts from a Base model" in capsys.readouterr().err
    assert main(["--base", BASE, "--data", str(tmp_path / "none"), "--name", "x", "--out", str(tmp_path / "x")]) == 2
    assert "error: Dataset not found" in capsys.readouterr().err
    assert main(["--data", str(data)]) == 2
    assert "--base, --name required" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_progress_line_shows_steps_loss_and_time_left():
    from qwen_tts_core.finetune.__main__ import progress_line

    line = progress_line(trainer.Progress(epoch=2, epochs=3, step=3, steps=12, loss=0.12345, seconds_left=125.9),
                         width=8)
    assert line == "epoch 2/3 [##......] step 3/12 loss 0.1235 ~02:05 left"


def test_memory_table(capsys):
    assert main(["--memory-table"]) == 0
    assert capsys.readouterr().out.strip() == memory.table()
