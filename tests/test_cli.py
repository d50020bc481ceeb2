"""The command line: text in, WAV out, for every model type; bad input ends with a message and
exit status 2, not a traceback."""
import subprocess
import sys

import pytest

from conftest import AUDIO, MODELS, ROOT
from qwen_tts_core.audio import read_wav

pytestmark = pytest.mark.core


def cli(*args):
    return subprocess.run([sys.executable, "-m", "qwen_tts_core", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model,extra", [
    ("Tiny-CustomVoice", ["--speaker", "ryan", "--language", "english"]),
    ("Tiny-VoiceDesign", ["--instruct", "A calm voice."]),
    ("Tiny-Base", ["--ref-audio", AUDIO / "ref_en.wav", "--ref-text", "The quick brown fox."]),
])
def test_writes_a_wav(tmp_path, model, extra):
    out = tmp_path / "out.wav"
    run = cli(MODELS / model, "--text", "Hello from the command line.", "--out", out, "--max-seconds", "1",
              "--device", "cpu", "--dtype", "fp32", *extra)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout
    wav, rate = read_wav(out)
    assert rate == 24000 and wav.shape[0] == 1 and 0 < wav.shape[1] <= 24000


@pytest.mark.parametrize("args,message", [
    (["--speaker", "nobody"], "Unknown speaker 'nobody'"),
    (["--language", "klingon"], "Unsupported language"),
])
def test_bad_input_is_a_message_and_status_2(tmp_path, args, message):
    run = cli(MODELS / "Tiny-CustomVoice", "--text", "Hi.", "--out", tmp_path / "x.wav", "--device", "cpu", *args)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr


def test_missing_model_folder(tmp_path):
    run = cli(tmp_path / "nothing-here", "--text", "Hi.", "--out", tmp_path / "x.wav")
    assert run.returncode == 2 and "Model folder not found" in run.stderr
