"""Saved voices: a cloned voice (x-vector, and for in-context clones the reference codes and
transcript) stored as a versioned safetensors file, never pickle.

File layout (format version 1):
    tensors   speaker_embedding [D] float32, ref_codes [T, 16] int64 (in-context voices only)
    metadata  format="qwen-tts-voice", format_version="1", model_type, model_size, hidden_size,
              mode ("in_context" | "x_vector"), ref_text, name

    voice = Voice.from_model(tts, tts.create_voice_clone_prompt(wav, 24000, "transcript"))
    path = save_voice(voice, "models/qwen-tts-voices", "narrator")
    voice = load_voice(path, expect=tts)     # checks the file was made with a model of this size
"""
from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from .codec.tokenizer import NUM_CODEBOOKS, codes_out_of_range
from .config import size_label
from .errors import InputError, VoiceFileError
from .prompt import VoicePrompt

FORMAT = "qwen-tts-voice"
FORMAT_VERSION = 1
EXTENSION = ".safetensors"
MAX_NAME_LENGTH = 100
_UNSAFE_CHARS = re.compile(r"[^\w\-. ()]+")
# Device names Windows reserves in every folder, with any extension too ("con.txt"), any case
WINDOWS_RESERVED = frozenset(["con", "prn", "aux", "nul"] + [f"{d}{n}" for d in ("com", "lpt")
                                                             for n in "0123456789\u00b9\u00b2\u00b3"])


@dataclass
class Voice:
    """A cloned voice and the model it was made with (a voice only fits models of that width)."""
    prompt: VoicePrompt
    model_type: str = "base"
    model_size: str = ""          # "1b7" / "0b6" as in the checkpoint's config.json
    hidden_size: int = 0          # width of the talker = length of the x-vector
    name: str = ""

    @classmethod
    def from_model(cls, tts, prompt: VoicePrompt, name: str = "") -> "Voice":
        c = tts.config
        return cls(prompt, c.tts_model_type, c.tts_model_size, c.talker.hidden_size, name)

    @property
    def mode(self) -> str:
        return "in_context" if self.prompt.in_context else "x_vector"

    @property
    def size_label(self) -> str:
        return size_label(self.model_size, unknown="unknown-size")

    def describe(self) -> str:
        text = f", transcript: {self.prompt.ref_text!r}" if self.prompt.in_context else ""
        frames = f", {self.prompt.ref_codes.shape[0]} reference frames" if self.prompt.in_context else ""
        return f"voice {self.name or '(unsaved)'}: {self.mode} clone made with a {self.size_label} " \
               f"{self.model_type} model{frames}{text}"

    def check_fits(self, tts) -> None:
        """Raises VoiceFileError when this voice cannot be used with `tts`."""
        c = tts.config
        if c.tts_model_type != "base":
            raise VoiceFileError(
                f"Cloned voices are used with a Base model (e.g. Qwen3-TTS-12Hz-1.7B-Base); the loaded "
                f"model {tts.folder.name} is a {c.tts_model_type} model.")
        if self.hidden_size != c.talker.hidden_size:
            name = f" {self.name!r}" if self.name else ""
            raise VoiceFileError(
                f"The voice{name} was made with a {self.size_label} model (x-vector of "
                f"{self.hidden_size} values) but the loaded model {tts.folder.name} is "
                f"{size_label(c.tts_model_size, unknown='unknown-size')} ({c.talker.hidden_size}). Load a "
                f"{self.size_label} Base model, or re-create the voice from its reference audio "
                "with this model.")


def voice_file_name(name: str) -> str:
    """A user's voice name -> a safe file name (`<name>.safetensors`).

    Path tricks are rejected (separators, `..`, leading dots, absolute paths), and so are the
    device names Windows reserves (`con`, `nul`, `com1`, ..., also as `con.txt`); other characters
    that file systems dislike (`:`, `*`, `?`, ...) become `_`."""
    if not isinstance(name, str):
        raise InputError(f"The voice name must be text, got {type(name).__name__}.")
    stem = name.strip()
    if stem.lower().endswith(EXTENSION):
        stem = stem[: -len(EXTENSION)].strip()
    if not stem:
        raise InputError("The voice name is empty; type a name such as 'narrator'.")
    if "/" in stem or "\\" in stem or stem.startswith(".") or ".." in stem or "\x00" in stem:
        raise InputError(f"Invalid voice name {name!r}: a name cannot contain '/', '\\' or '..' "
                         "or start with a dot. Use letters, digits, spaces, '-' and '_'.")
    stem = _UNSAFE_CHARS.sub("_", stem).strip()
    device = stem.split(".")[0].strip().lower()
    if device in WINDOWS_RESERVED:
        raise InputError(f"Invalid voice name {name!r}: {device.upper()} is a device name that Windows "
                         "reserves (CON, PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, also with an extension "
                         "such as 'con.txt'); such a file cannot be made or opened there. Choose another name.")
    if len(stem) > MAX_NAME_LENGTH:
        raise InputError(f"The voice name is {len(stem)} characters long; use at most {MAX_NAME_LENGTH}.")
    return stem + EXTENSION


def voice_path(folder: str | Path, name: str) -> Path:
    """The file of voice `name` inside `folder`; never outside it (a symbolic link there that
    points outside is refused, for reading and for writing through it)."""
    root = Path(folder).resolve()
    link = root / voice_file_name(name)
    path = link.resolve()
    if path.parent != root:
        if link.is_symlink():
            raise InputError(f"The voice {name!r} is a symbolic link to {path}, outside the voices folder "
                             f"{root}; voices are only read from and saved inside that folder. Copy the file "
                             "into the folder instead of linking it.")
        raise InputError(f"Invalid voice name {name!r}: it points outside the voices folder.")
    return path


def list_voices(folder: str | Path) -> list[str]:
    """Names (file names without extension) of the voice files in `folder` that `voice_path`
    accepts: symbolic links that point outside the folder are not listed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    real = root.resolve()
    return sorted(p.name[: -len(EXTENSION)] for p in root.iterdir()
                  if p.name.endswith(EXTENSION) and not p.name.startswith(".") and p.is_file()
                  and p.resolve().parent == real)


def _tensors(voice: Voice) -> dict[str, torch.Tensor]:
    p = voice.prompt
    emb = p.speaker_embedding
    if not isinstance(emb, torch.Tensor) or emb.dim() != 1 or emb.numel() == 0:
        raise InputError("The voice has no valid speaker embedding; make it with the clone node.")
    out = {"speaker_embedding": emb.detach().float().cpu().contiguous()}
    if p.ref_codes is not None:
        codes = p.ref_codes
        if codes.dim() != 2 or codes.shape[1] != NUM_CODEBOOKS:
            raise InputError(f"The voice's reference codes have shape {tuple(codes.shape)}; expected "
                             f"[frames, {NUM_CODEBOOKS}].")
        out["ref_codes"] = codes.detach().to(torch.int64).cpu().contiguous()
    return out


def _metadata(voice: Voice, name: str) -> dict[str, str]:
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "model_type": voice.model_type,
            "model_size": voice.model_size, "hidden_size": str(int(voice.hidden_size)),
            "mode": voice.mode, "ref_text": voice.prompt.ref_text or "", "name": name}


def _same(a: Voice, b: Voice) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return (ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
            and (a.prompt.ref_text or "") == (b.prompt.ref_text or "") and a.hidden_size == b.hidden_size)


def save_voice(voice: Voice, folder: str | Path, name: str, overwrite: bool = False) -> Path:
    """Writes `voice` as `<folder>/<name>.safetensors` (atomically). An existing file with another
    voice is kept unless `overwrite`; saving the same voice again is a no-op."""
    from safetensors.torch import save_file

    path = voice_path(folder, name)
    stem = path.name[: -len(EXTENSION)]
    tensors = _tensors(voice)
    if path.exists():
        try:
            same = _same(load_voice(path), voice)
        except VoiceFileError:
            same = False
        if same:
            return path
        if not overwrite:
            raise VoiceFileError(f"A different voice named {stem!r} already exists ({path}). Choose "
                                 "another name, or turn on 'overwrite' to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _new_file(path.parent, f".{stem}.", ".tmp")
    try:
        save_file(tensors, tmp, metadata=_metadata(voice, stem))
        os.chmod(tmp, mode)               # safetensors writes its files 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[str, int]:
    """Creates an empty file with a fresh name in `folder`; returns it and the mode a new file
    gets here (0644 under umask 022, like ComfyUI's own outputs). Saved voices get that mode:
    tempfile.mkstemp and safetensors make 0600 files, which other users and containers sharing
    the folder cannot read."""
    for _ in range(10):
        name = str(folder / f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        return name, mode
    raise FileExistsError(f"Could not create a temporary file in {folder}.")


def load_voice(path: str | Path, expect=None) -> Voice:
    """Reads a voice file; with `expect` (a loaded QwenTTS) also checks that it fits that model.
    Every problem is a VoiceFileError whose message says what to do."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VoiceFileError(f"Voice file not found: {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys & {"speaker_embedding", "ref_codes"}}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise VoiceFileError(f"{path.name} is damaged or not a safetensors file ({e}). Delete it and "
                             "save the voice again from its reference audio.") from None
    if meta.get("format") != FORMAT:
        raise VoiceFileError(f"{path.name} is a safetensors file but not a Qwen3-TTS voice (it has no "
                             "voice metadata). Voice files are made by the Save Voice node.")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise VoiceFileError(f"{path.name} has an unreadable voice format version "
                             f"{meta.get('format_version')!r}; it is damaged: save the voice again.") from None
    if version > FORMAT_VERSION:
        raise VoiceFileError(f"{path.name} was saved by a newer version of the Qwen3-TTS nodes (voice "
                             f"format {version}; this version reads up to {FORMAT_VERSION}). Update the "
                             "node pack to use it.")
    if version < 1:
        raise VoiceFileError(f"{path.name} has an invalid voice format version {version}.")
    emb = tensors.get("speaker_embedding")
    codes = tensors.get("ref_codes")
    try:
        hidden = int(meta.get("hidden_size", "0"))
    except ValueError:
        hidden = -1
    mode = meta.get("mode")
    problems = []
    if emb is None or emb.dim() != 1 or not emb.is_floating_point() or emb.numel() != hidden:
        problems.append("speaker embedding missing or of the wrong size")
    elif not torch.isfinite(emb).all():
        problems.append("speaker embedding holds NaN/inf")
    if mode not in ("in_context", "x_vector") or (mode == "in_context") != (codes is not None):
        problems.append(f"mode {mode!r} does not match its contents")
    if codes is not None and (codes.dim() != 2 or codes.shape[1] != NUM_CODEBOOKS or codes.dtype != torch.int64
                              or codes.numel() == 0 or codes_out_of_range(codes) is not None):
        problems.append("reference codes invalid")
    if mode == "in_context" and not meta.get("ref_text", "").strip():
        problems.append("in-context voice without its transcript")
    if problems:
        raise VoiceFileError(f"{path.name} is damaged ({'; '.join(problems)}). Delete it and save the "
                             "voice again from its reference audio.")
    prompt = VoicePrompt(emb.float(), codes, meta.get("ref_text") or None)
    voice = Voice(prompt, meta.get("model_type", "base"), meta.get("model_size", ""), hidden,
                  meta.get("name") or path.name[: -len(EXTENSION)])
    if expect is not None:
        voice.check_fits(expect)
    return voice
