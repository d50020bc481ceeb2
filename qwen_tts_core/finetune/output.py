"""The output of fine-tuning: a CustomVoice checkpoint folder in the official layout, written
atomically once per epoch, with the training state that `resume` continues from.

    <out>/config.json            the base config with tts_model_type custom_voice and the new
                                 speaker in talker_config.spk_id / spk_is_dialect
    <out>/model.safetensors      talker weights (the speaker encoder is dropped); the speaker's
                                 row of the codec embedding holds its x-vector
    <out>/generation_config.json, vocab.json, merges.txt, tokenizer_config.json, ...,
    <out>/speech_tokenizer/      the base folder's files, hard-linked where the file system allows
                                 (no extra disk space), else copied
    <out>/training/              state.json, trainable.safetensors (fp32), optimizer.pt

An epoch is written to a hidden sibling folder `.<name>.partial` and swapped in with two renames;
an interruption at any point leaves the previous epoch complete (`recover` finishes or undoes a
swap that was cut between its two renames).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import WEIGHTS_FILE, WEIGHTS_INDEX
from ..config import read_json
from ..errors import InputError, ModelFolderError, QwenTTSError
from ..voice import WINDOWS_RESERVED

STATE_DIR = "training"
STATE_FORMAT, STATE_VERSION = "qwen-tts-finetune-state", 1
MAX_NAME = 64
_NAME = re.compile(r"^[^\W_][\w\-.]*$")


def check_name(name: str, what: str = "speaker name") -> str:
    """A speaker or folder name: letters, digits, '_', '-' and '.' (no spaces or path characters,
    no leading or trailing dot, no '..', no device name that Windows reserves: the name may
    become a folder under models/qwen-tts/)."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"The {what} is empty; type a name such as 'my_voice'.")
    name = name.strip()
    if any(c in name for c in "/\\:") or ".." in name or name.startswith(".") or "\x00" in name:
        raise InputError(f"Invalid {what} {name!r}: it cannot contain '/', '\\', ':' or '..' or start with "
                         "a dot. Use letters, digits, '_' and '-'.")
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise InputError(f"Invalid {what} {name!r}: use at most {MAX_NAME} letters, digits, '_', '-' and "
                         "'.', starting with a letter or digit (no spaces).")
    if name.endswith("."):
        raise InputError(f"Invalid {what} {name!r}: it cannot end with a dot (Windows drops it).")
    if name.split(".")[0].lower() in WINDOWS_RESERVED:
        raise InputError(f"Invalid {what} {name!r}: {name.split('.')[0].upper()} is a device name that Windows "
                         "reserves (CON, PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, also with an extension); no "
                         "folder can have it there. Choose another name.")
    return name


def fingerprint(*paths: Path) -> str:
    """Identifies files by their bytes: whole small files, (size, first and last MiB) of large ones."""
    h = hashlib.sha256()
    for p in paths:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                h.update(f.read())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ state
@dataclass
class TrainingState:
    """Where training stands after a finished epoch (all that `resume` needs besides tensors)."""
    epochs_done: int
    step: int                                  # optimizer steps so far
    losses: list[float]                        # mean loss of every optimizer step so far
    config: dict                               # TrainConfig as a dict
    base_fingerprint: str
    dataset_fingerprint: str
    extra: dict = field(default_factory=dict)  # facts for people (base path, timings)

    def to_json(self) -> dict:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "epochs_done": self.epochs_done,
                "step": self.step, "losses": self.losses, "config": self.config,
                "base_fingerprint": self.base_fingerprint, "dataset_fingerprint": self.dataset_fingerprint,
                "extra": self.extra}


def read_state(out: Path) -> tuple[TrainingState, dict[str, torch.Tensor], dict]:
    """(state, fp32 trainable tensors, optimizer state dict) of a training output folder."""
    from safetensors.torch import load_file

    folder = out / STATE_DIR
    if not (folder / "state.json").is_file():
        raise ModelFolderError(
            f"{out} has no training state ({STATE_DIR}/state.json): it was not written by this trainer, "
            "or its state was deleted. Train into a new folder, or choose overwrite.")
    raw = read_json(folder / "state.json")
    if raw.get("format") != STATE_FORMAT or not isinstance(raw.get("version"), int):
        raise ModelFolderError(f"{folder / 'state.json'} is not a qwen-tts training state.")
    if raw["version"] > STATE_VERSION:
        raise ModelFolderError(f"{out} was written by a newer version of this pack; update it to resume.")
    try:
        state = TrainingState(int(raw["epochs_done"]), int(raw["step"]), [float(x) for x in raw["losses"]],
                              dict(raw["config"]), str(raw["base_fingerprint"]),
                              str(raw["dataset_fingerprint"]), dict(raw.get("extra") or {}))
        tensors = load_file(str(folder / "trainable.safetensors"))
        optimizer = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    except (KeyError, TypeError, ValueError, OSError, RuntimeError) as e:
        raise ModelFolderError(f"The training state in {folder} is damaged ({e}); train into a new "
                               "folder, or choose overwrite.") from None
    return state, tensors, optimizer


# ------------------------------------------------------------------------------------------ writing
def _partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _old(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def recover(out: Path) -> None:
    """Completes or undoes a swap that was interrupted, and removes a half-written epoch."""
    old, partial = _old(out), _partial(out)
    if old.exists():
        if out.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, out)
    if partial.exists():
        shutil.rmtree(partial)


def _disk_error(e: OSError, out: Path, needed: int) -> QwenTTSError:
    kept = f"The last finished checkpoint in {out} is kept as it was." if out.exists() else \
        "Nothing was written."
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return QwenTTSError(f"The disk is full: saving the checkpoint to {out} needs about "
                            f"{needed / 2**30:.1f} GiB. {kept} Free some space, then resume.")
    return QwenTTSError(f"Could not write the checkpoint to {out} ({e}). {kept}")


@contextmanager
def staged(out: Path, needed: int):
    """Yields an empty hidden folder beside `out`; when the block finishes it replaces `out`.
    On any error (a full disk, Ctrl-C) the staged folder is removed and `out` stays as it was."""
    recover(out)
    partial = _partial(out)
    try:
        partial.mkdir(parents=True)
        yield partial
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, OSError):
            raise _disk_error(e, out, needed) from None
        raise
    if out.exists():
        os.rename(out, _old(out))
    os.rename(partial, out)
    shutil.rmtree(_old(out), ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard link (no extra disk space; model files are never modified in place), else a copy."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError:
        shutil.copy2(src, dst)
        return "copied"


def copy_model_files(base: Path, dst: Path) -> dict[str, int]:
    """Every file of the base folder except its config and weights (tokenizer files,
    generation_config.json, speech_tokenizer/, ...), hidden entries skipped. -> counts per mode."""
    counts = {"linked": 0, "copied": 0}
    skip = {"config.json", WEIGHTS_FILE, WEIGHTS_INDEX, STATE_DIR}
    for src in sorted(base.rglob("*")):
        rel = src.relative_to(base)
        if rel.parts[0] in skip or any(p.startswith(".") for p in rel.parts) or \
                (len(rel.parts) == 1 and re.fullmatch(r"model-\d+-of-\d+\.safetensors", rel.name)):
            continue
        if src.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            counts[link_or_copy(src, dst / rel)] += 1
    return counts


def custom_voice_config(base_config: dict, speaker: str, speaker_id: int) -> dict:
    """The base config.json turned into a CustomVoice config with one more speaker."""
    config = json.loads(json.dumps(base_config))
    config["tts_model_type"] = "custom_voice"
    talker = config["talker_config"]
    talker["spk_id"] = {**(talker.get("spk_id") or {}), speaker: speaker_id}
    talker["spk_is_dialect"] = {**(talker.get("spk_is_dialect") or {}), speaker: False}
    return config


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def write_checkpoint(out: Path, base: Path, weights: dict[str, torch.Tensor], config: dict,
                     state: TrainingState, trainable: dict[str, torch.Tensor], optimizer: dict) -> dict:
    """Writes one epoch's complete folder (atomically, see `staged`). `weights` are the talker
    tensors in the checkpoint's names and dtype. -> how the base files were carried over."""
    needed = sum(t.numel() * t.element_size() for t in [*weights.values(), *trainable.values()])
    with staged(out, needed) as tmp:
        save_tensors(weights, tmp / WEIGHTS_FILE)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        files = copy_model_files(base, tmp)
        (tmp / STATE_DIR).mkdir()
        save_tensors(trainable, tmp / STATE_DIR / "trainable.safetensors")
        torch.save(optimizer, tmp / STATE_DIR / "optimizer.pt")
        (tmp / STATE_DIR / "state.json").write_text(json.dumps(state.to_json(), indent=2) + "\n", encoding="utf-8")
    return files
