import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models" / "qwen-tts"
AUDIO = FIXTURES / "audio"
GOLDEN = FIXTURES / "golden"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


def load_golden(name: str):
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / f"{name}.safetensors")), json.loads((GOLDEN / f"{name}.json").read_text())


_MODELS: dict = {}


def tiny_model(name: str, speech_tokenizer: bool = True):
    """Loads a fixture model once per test session (fp32, CPU)."""
    from qwen_tts_core.api import QwenTTS

    key = (name, speech_tokenizer)
    if key not in _MODELS:
        _MODELS[key] = QwenTTS.from_pretrained(MODELS / name, dtype="fp32", device="cpu",
                                               speech_tokenizer=speech_tokenizer)
    return _MODELS[key]


@pytest.fixture(scope="module")
def one_thread():
    """For modules that train tiny models: one thread is fastest for their small ops (two threads
    spin-wait on each other when the 2 cores are busy: up to 30x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def generation_golden():
    return load_golden("generation")


def require_codec():
    """Skips the calling test when the speech tokenizer (qwen_tts_core.codec) is not in this
    checkout; only an import failure skips."""
    try:
        import qwen_tts_core.codec  # noqa: F401
    except ImportError as e:
        reason = f"needs the speech tokenizer: qwen_tts_core.codec does not import ({e})"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture
def codec():
    require_codec()
