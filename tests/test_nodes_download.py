"""The loaders' download entries on the ComfyUI-compatible runtime, against the local Hub stand-in
(tests/hub_server.py via HF_ENDPOINT): listed only for checkpoints not on disk, never fetched by
validation or by a plain name, fetched with the byte progress bar when chosen, Cancel keeps what
arrived, a half download is never listed or loadable, and the finished folder is a normal model."""
from pathlib import Path

import pytest

import comfy_env
from conftest import HUB_CHUNK as CHUNK
from conftest import MODELS
from qwen_tts_core import download as dl
from qwen_tts_core.errors import DownloadError, InputError, ModelFolderError

CUSTOM, TOKENIZER = "Qwen3-TTS-12Hz-1.7B-CustomVoice", "Qwen3-TTS-Tokenizer-12Hz"
CUSTOM_ENTRY = "Qwen3-TTS-12Hz-1.7B-CustomVoice (download, 4.5 GB)"
TOKENIZER_ENTRY = "Qwen3-TTS-Tokenizer-12Hz (download, 0.7 GB)"
ALL_MODEL_ENTRIES = ["Qwen3-TTS-12Hz-1.7B-CustomVoice (download, 4.5 GB)",
                     "Qwen3-TTS-12Hz-0.6B-CustomVoice (download, 2.5 GB)",
                     "Qwen3-TTS-12Hz-1.7B-VoiceDesign (download, 4.5 GB)",
                     "Qwen3-TTS-12Hz-1.7B-Base (download, 4.5 GB)",
                     "Qwen3-TTS-12Hz-0.6B-Base (download, 2.5 GB)"]
LOAD = dict(dtype="auto", device="auto")


@pytest.fixture
def root(tmp_path):
    """An empty models/qwen-tts as the only model folder."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths["qwen-tts"]
    folder_paths.folder_names_and_paths["qwen-tts"] = ([str(tmp_path / "qwen-tts")], set())
    (tmp_path / "qwen-tts").mkdir()
    yield tmp_path / "qwen-tts"
    folder_paths.folder_names_and_paths["qwen-tts"] = saved


@pytest.fixture
def progress():
    import comfy.utils

    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None:
                                             seen.append((value, total)))
    yield seen
    comfy.utils.set_progress_bar_global_hook(None)


def options(N, node="QwenTTSModelLoader"):
    return N[node].define_schema().inputs[0].options


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_lists_download_entries_only_for_checkpoints_not_on_disk(N, root, hub):
    assert options(N) == ALL_MODEL_ENTRIES                    # (what ComfyUI's /object_info shows)
    assert options(N, "QwenTTSSpeechTokenizerLoader") == [TOKENIZER_ENTRY]
    (root / CUSTOM).symlink_to(MODELS / "Tiny-CustomVoice", target_is_directory=True)
    assert options(N) == [CUSTOM] + [e for e in ALL_MODEL_ENTRIES if e != CUSTOM_ENTRY]
    assert options(N, "QwenTTSSpeechTokenizerLoader") == [CUSTOM, TOKENIZER_ENTRY]
    assert hub.log == []                                      # listing never asks the network


def test_choosing_a_download_entry_downloads_then_it_is_a_normal_model(N, rt, root, hub, progress):
    comfy_env.validate(N["QwenTTSModelLoader"], dict(model_name=CUSTOM_ENTRY, **LOAD))
    assert hub.log == []                                      # validation downloads nothing
    model, tokenizer, info = comfy_env.run_node(N["QwenTTSModelLoader"], model_name=CUSTOM_ENTRY, **LOAD)
    total = size_of(MODELS / "Tiny-CustomVoice")
    assert progress[0] == (0, total) and progress[-1] == (total, total)   # the bar counts bytes
    assert info.startswith(f"{CUSTOM}: Qwen3-TTS") and model.model_type == "custom_voice"
    assert size_of(root / CUSTOM) == total
    assert options(N)[0] == CUSTOM and CUSTOM_ENTRY not in options(N)
    hub.log.clear()                                           # a workflow saved with the entry still loads
    model, _, _ = comfy_env.run_node(N["QwenTTSModelLoader"], model_name=CUSTOM_ENTRY, **LOAD)
    assert model.name == CUSTOM and hub.log == []


def test_a_plain_name_never_downloads(N, root, hub):
    with pytest.raises(ModelFolderError) as e:
        comfy_env.run_node(N["QwenTTSModelLoader"], model_name=CUSTOM, **LOAD)
    assert f"choose '{CUSTOM_ENTRY}' in the loader's list" in str(e.value)
    assert f"hf download Qwen/{CUSTOM} --local-dir" in str(e.value)
    assert hub.log == [] and list(root.iterdir()) == []


def test_cancel_keeps_what_arrived_and_lists_nothing_until_complete(N, rt, root, hub, monkeypatch):
    import comfy.model_management as mm
    from huggingface_hub import file_download

    real_http_get = file_download.http_get

    class CancelOnceTheWeightsBegin:          # the file object huggingface_hub's http_get writes to
        def __init__(self, out):
            self.out = out

        def write(self, data):
            written = self.out.write(data)
            if self.out.name.endswith("model.safetensors.part"):
                mm.interrupt_current_processing(True)     # the user presses Cancel
            return written

        def __getattr__(self, name):
            return getattr(self.out, name)

    monkeypatch.setattr(file_download, "http_get",
                        lambda url, out, *args, **kwargs: real_http_get(url, CancelOnceTheWeightsBegin(out), *args,
                                                                        **kwargs))
    with pytest.raises(mm.InterruptProcessingException):
        comfy_env.run_node(N["QwenTTSModelLoader"], model_name=CUSTOM_ENTRY, **LOAD)
    monkeypatch.setattr(file_download, "http_get", real_http_get)
    assert not mm.processing_interrupted()
    staging = root / dl.STAGING / CUSTOM
    assert (staging / "config.json").is_file()                # the small files arrived ...
    assert (staging / "model.safetensors.part").stat().st_size == CHUNK   # ... stopped after one chunk
    assert CUSTOM not in rt.list_model_folders() and not (root / CUSTOM).exists()
    assert options(N)[0] == CUSTOM_ENTRY                      # still a download, not a model
    with pytest.raises(InputError, match="Invalid model folder name"):
        rt.find_model_folder(f"{dl.STAGING}/{CUSTOM}")
    hub.log.clear()
    model, _, _ = comfy_env.run_node(N["QwenTTSModelLoader"], model_name=CUSTOM_ENTRY, **LOAD)
    assert [r[2] for r in hub.log if r[2]] == [f"bytes={CHUNK}-"]
    assert model.name == CUSTOM and sorted(p.name for p in root.iterdir()) == [CUSTOM]


def test_tokenizer_loader_downloads_the_tokenizer(N, root, hub):
    (handle,) = comfy_env.run_node(N["QwenTTSSpeechTokenizerLoader"], tokenizer_name=TOKENIZER_ENTRY, **LOAD)
    assert handle.name == TOKENIZER and (root / TOKENIZER / "model.safetensors").is_file()
    assert options(N, "QwenTTSSpeechTokenizerLoader") == [TOKENIZER]


def test_offline_download_says_what_to_do(N, root, monkeypatch):
    from hub_server import closed_port_endpoint

    monkeypatch.setenv("HF_ENDPOINT", closed_port_endpoint())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DownloadError) as e:
        comfy_env.run_node(N["QwenTTSModelLoader"], model_name=CUSTOM_ENTRY, **LOAD)
    assert "cannot be reached" in str(e.value) and f'--local-dir "{root / CUSTOM}"' in str(e.value)
    assert options(N)[0] == CUSTOM_ENTRY
