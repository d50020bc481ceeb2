"""Reading checkpoint folders: safetensors weights (single file or shards + index) loaded tensor
by tensor straight into the target dtype and device, and the Qwen BPE text tokenizer.

Modules are built on the meta device and receive the loaded tensors with `assign=True`, so no
full fp32 copy of the model ever sits in RAM.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .errors import ModelFolderError

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def weight_files(folder: Path) -> dict[str, Path]:
    """Maps each tensor name to the safetensors file that holds it."""
    index = folder / WEIGHTS_INDEX
    single = folder / WEIGHTS_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
            raise ModelFolderError(f"{index} is damaged ({e}); fetch it again.") from None
        files = {name: folder / file for name, file in weight_map.items()}
        missing = sorted({str(p.name) for p in files.values() if not p.exists()})
        if missing:
            raise ModelFolderError(f"{folder} is missing weight shards {missing}; the download "
                                   "is incomplete: fetch the missing files.")
        return files
    if single.exists():
        return {name: single for name in _header_names(single)}
    raise ModelFolderError(f"{folder} has no {WEIGHTS_FILE} (nor {WEIGHTS_INDEX} with shards).")


def _header_names(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelFolderError(f"{path} is not a readable safetensors file ({e}). The file is "
                               "probably truncated or corrupt: delete it and download it again.") from None


def load_tensors(files: dict[str, Path], names: Iterable[str], dtype: torch.dtype,
                 device: torch.device, strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """Loads `strip_prefix + name` for each name; floating tensors are cast to `dtype`."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(files[strip_prefix + name], []).append(name)
    out: dict[str, torch.Tensor] = {}
    for path, group in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for name in group:
                    t = f.get_tensor(strip_prefix + name)
                    out[name] = t.to(dtype) if t.is_floating_point() else t
        except Exception as e:
            raise ModelFolderError(f"Could not read weights from {path} ({e}). The file is "
                                   "probably truncated or corrupt: download it again.") from None
    return out


def load_into(module: nn.Module, files: dict[str, Path], dtype: torch.dtype, device: torch.device,
              prefix: str = "", what: str = "model") -> nn.Module:
    """Fills a (meta-device) module from checkpoint tensors named `prefix + <module key>`."""
    own = module.state_dict()
    expected = list(own)
    missing = [k for k in expected if prefix + k not in files]
    if missing:
        raise ModelFolderError(
            f"The {what} checkpoint lacks {len(missing)} of {len(expected)} tensors "
            f"(first: {missing[:3]}). It is not a matching Qwen3-TTS checkpoint or is incomplete.")
    tensors = load_tensors(files, expected, dtype, device, strip_prefix=prefix)
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(own[name].shape):
            raise ModelFolderError(
                f"The {what} tensor {prefix + name} has shape {tuple(t.shape)} but config.json "
                f"implies {tuple(own[name].shape)}: config.json and weights do not belong together.")
    module.load_state_dict(tensors, assign=True)
    return module.eval().requires_grad_(False)


def load_text_tokenizer(folder: Path):
    """The Qwen2 BPE tokenizer of a model folder (vocab.json, merges.txt, tokenizer_config.json),
    through transformers, which works the same on 4.57 and 5.x."""
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).exists() and not (folder / "tokenizer.json").exists():
            raise ModelFolderError(f"{folder} lacks the text tokenizer file {name}.")
    from transformers import AutoTokenizer, PretrainedConfig

    # Two false alarms are avoided here, without silencing transformers' logger: an empty
    # config keeps AutoTokenizer (5.x) from reading config.json as a model config ("a model of
    # type `qwen3_tts` to instantiate a model of type ``"; tokenizer_config.json names the
    # class); fix_mistral_regex=False says the Qwen BPE split is already right (4.57.3 warns of
    # a Mistral regex bug for any local folder whose config.json was written by 4.57.3).
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), config=PretrainedConfig(), fix_mistral_regex=False)
    except Exception as e:
        raise ModelFolderError(f"Could not load the text tokenizer in {folder}: {e}") from None
    return tok
