"""Loading model folders: official layouts (single file, shards), dtypes, and every kind of
broken folder giving a specific error with nothing half-loaded."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import MODELS, ROOT, tiny_model
from qwen_tts_core import ModelFolderError
from qwen_tts_core.api import QwenTTS

pytestmark = pytest.mark.core


def copy_model(tmp_path, name="Tiny-CustomVoice"):
    dst = tmp_path / name
    shutil.copytree(MODELS / name, dst)
    return dst


def load(folder, **kw):
    return QwenTTS.from_pretrained(folder, dtype="fp32", device="cpu", speech_tokenizer=False, **kw)


def test_sharded_checkpoint_loads_identically(tmp_path):
    folder = copy_model(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(folder / file), metadata={"format": "pt"})
        weight_map |= {k: file for k in keys}
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded = load(folder)
    single = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    a, b = sharded.model.state_dict(), single.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype,expected", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_dtypes_load_and_generate(dtype, expected):
    tts = QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype=dtype, device="cpu", speech_tokenizer=False)
    assert {p.dtype for p in tts.model.parameters()} == {expected}
    out = tts.generate_custom_voice("Half precision works too.", "vivian", "english", max_frames=8, seed=0)
    assert out.codes[0].shape[1] == 16 and out.codes[0].shape[0] >= 2


def test_missing_folder_says_what_to_download(tmp_path):
    with pytest.raises(ModelFolderError, match="Download"):
        load(tmp_path / "Qwen3-TTS-12Hz-1.7B-CustomVoice")


def test_missing_weights(tmp_path):
    folder = copy_model(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="no model.safetensors"):
        load(folder)


def test_truncated_weights(tmp_path):
    folder = copy_model(tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="truncated or corrupt"):
        load(folder)


def test_missing_shard(tmp_path):
    folder = copy_model(tmp_path)
    keys = list(load_file(str(folder / "model.safetensors")))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "model-00001-of-00002.safetensors" for k in keys}}))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing weight shards"):
        load(folder)


def test_weights_of_another_model(tmp_path):
    """CustomVoice config with the speech tokenizer's weights: missing tensors named."""
    folder = copy_model(tmp_path)
    shutil.copy(MODELS / "Tiny-Tokenizer-12Hz" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ModelFolderError, match="lacks .* tensors"):
        load(folder)


def test_config_and_weights_of_different_sizes(tmp_path):
    folder = copy_model(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["talker_config"]["hidden_size"] *= 2
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="do not belong together"):
        load(folder)


@pytest.mark.parametrize("model_type,match", [("qwen2", "not Qwen3-TTS"),
                                              ("qwen3_tts_tokenizer_12hz", "speech-tokenizer folder"),
                                              ("qwen3_tts_tokenizer_25hz", "25 Hz")])
def test_config_of_another_family(tmp_path, model_type, match):
    folder = copy_model(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match=match):
        load(folder)


def test_unknown_model_type(tmp_path):
    folder = copy_model(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tts_model_type"] = "singing"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="unknown tts_model_type 'singing'"):
        load(folder)


def test_damaged_config(tmp_path):
    folder = copy_model(tmp_path)
    (folder / "config.json").write_text('{"model_type": "qwen3_tts", ')
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load(folder)


def test_missing_speech_tokenizer_says_what_to_fetch(tmp_path):
    folder = copy_model(tmp_path)
    shutil.rmtree(folder / "speech_tokenizer")
    with pytest.raises(ModelFolderError, match="speech_tokenizer"):
        QwenTTS.from_pretrained(folder, dtype="fp32", device="cpu")


def test_weights_go_straight_into_the_target_dtype(tmp_path):
    """Peak memory of loading the weights (what from_pretrained does before the tokenizer and
    the speech tokenizer) stays near the loaded size: no fp32 copy of the model is ever made.
    Measured in a fresh process on a checkpoint made large on purpose (wide text embedding)."""
    folder = copy_model(tmp_path, "Tiny-VoiceDesign")
    cfg = json.loads((folder / "config.json").read_text())
    width = 512
    cfg["talker_config"]["text_hidden_size"] = width
    (folder / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(folder / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    for name in list(tensors):
        if "text_embedding" in name or "text_projection.linear_fc1" in name \
                or name.endswith("linear_fc2.weight") and "text_projection" in name:
            shape = list(tensors[name].shape)
            shape = [width if s == 8 else s for s in shape]
            tensors[name] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
        elif "text_projection.linear_fc1.bias" in name:
            tensors[name] = torch.zeros(width, dtype=torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    size = os.path.getsize(folder / "model.safetensors")
    assert size > 100e6
    script = textwrap.dedent(f"""
        import sys, torch
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from qwen_tts_core.api import load_model
        from qwen_tts_core.checkpoint import weight_files
        from qwen_tts_core.config import ModelConfig, read_json
        folder = Path({str(folder)!r})
        config = ModelConfig.from_dict(read_json(folder / "config.json"))
        files = weight_files(folder)
        dtype = dict(bf16=torch.bfloat16, fp32=torch.float32)["{{}}"]

        def status(key):  # kB -> bytes
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024

        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        before = status("VmRSS:")
        model = load_model(config, files, dtype, torch.device("cpu"))
        print(status("VmHWM:") - before)
    """)
    peak = {}
    for dtype in ("bf16", "fp32"):
        run = subprocess.run([sys.executable, "-c", script.format(dtype)], capture_output=True, text=True, check=True)
        peak[dtype] = int(run.stdout.strip().splitlines()[-1])
    print(f"checkpoint {size / 1e6:.0f} MB (bf16); peak RSS increase: bf16 load {peak['bf16'] / 1e6:.0f} MB, "
          f"fp32 load {peak['fp32'] / 1e6:.0f} MB")
    largest = max(t.numel() * t.element_size() for t in tensors.values())
    # bf16: the model (1x the file) plus file pages read through mmap; an fp32 copy would add 2x
    assert peak["bf16"] < 1.5 * size
    # fp32: the model (2x) + file pages (1x) + one source tensor being converted, with 10% slack;
    # a full fp32 state dict beside the model would add another 2x
    assert peak["fp32"] < 1.1 * (3 * size + largest)


def test_text_tokenizer_loads_without_transformers_warnings(tmp_path):
    """A newcomer's first run is clean: loading the text tokenizer of a checkpoint folder (whose
    config.json, like the released ones, was written by transformers 4.57.3 with model_type
    qwen3_tts) logs no warning on 4.57 or 5.x, and transformers' own logging is left as it was."""
    import logging

    from transformers.utils import logging as tf_logging

    from qwen_tts_core.checkpoint import load_text_tokenizer

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("transformers")
    handler = Collect(level=logging.WARNING)
    verbosity = tf_logging.get_verbosity()
    tf_logging.set_verbosity_warning()
    logger.addHandler(handler)
    try:
        tok = load_text_tokenizer(MODELS / "Tiny-CustomVoice")
        assert tf_logging.get_verbosity() == logging.WARNING   # nothing silenced globally
    finally:
        logger.removeHandler(handler)
        tf_logging.set_verbosity(verbosity)
    assert records == []
    # the same BPE as before: "<|im_start|>assistant\n" -> its special id, then plain tokens
    assert tok("<|im_start|>assistant\nHello")["input_ids"] == [151644, 77091, 198, 9707]
