"""Where the pack's files are, through ComfyUI's `folder_paths` (extra_model_paths.yaml
included): the model and voice folders, the loaders' lists (with download entries for released
checkpoints not on disk yet), the input folder a prompt may read from, the training cache."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import comfy.utils
import folder_paths
from qwen_tts_core import download as hub
from qwen_tts_core import speech_codes
from qwen_tts_core.errors import InputError, ModelFolderError
from qwen_tts_core.paths import leads_out_by_name
from qwen_tts_core.voice import list_voices, voice_path

from .progress import stop_if_interrupted

MODELS = "qwen-tts"              # models/qwen-tts/<checkpoint folder>/
VOICES = "qwen-tts-voices"       # models/qwen-tts-voices/<name>.safetensors

def register_folders() -> None:
    """Adds models/qwen-tts and models/qwen-tts-voices (paths from extra_model_paths.yaml, read by
    ComfyUI before packs load, stay and come first)."""
    for name, exts in ((MODELS, set()), (VOICES, {".safetensors"})):
        default = os.path.join(folder_paths.models_dir, name)
        folder_paths.add_model_folder_path(name, default)
        paths, old_exts = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(old_exts) | exts)


def model_roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(MODELS)]


def voice_roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(VOICES)]


def input_roots() -> list[Path]:
    """The folders a prompt may read files from (qwen_tts_core.paths): ComfyUI's input folder."""
    return [Path(folder_paths.get_input_directory())]


def speech_codes_cache() -> Path:
    """Where Train Voice caches the speech codes of its clips (keyed by the clip's bytes and the
    tokenizer): ComfyUI's user folder, in a system folder (user/__qwen_tts) that its HTTP API
    neither lists, serves nor writes, unlike input/ and temp/, where anyone may upload a file."""
    system_folder = getattr(folder_paths, "get_system_user_directory", None)   # not in 0.3.64
    user = Path(system_folder("qwen_tts")) if system_folder else Path(folder_paths.get_user_directory()) / "__qwen_tts"
    return user / "speech_codes"


def list_model_folders(kind: str = "any") -> list[str]:
    """Folder names under models/qwen-tts that hold a config.json (one level, or two for
    `org/name` layouts). kind "model": TTS checkpoints only; "any": also the standalone speech
    tokenizer (every model folder holds a tokenizer too)."""
    names = []
    for root in model_roots():
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if sub.name.startswith("."):     # unfinished downloads (.downloading/), an epoch being trained
                continue
            for folder in [sub] + (sorted(sub.iterdir()) if sub.is_dir() and not (sub / "config.json").exists() else []):
                if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file():
                    if kind == "model" and _looks_like_tokenizer(folder):
                        continue
                    names.append(folder.relative_to(root).as_posix())
    return sorted(dict.fromkeys(names), key=str.lower)


def _looks_like_tokenizer(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") \
            == speech_codes.TOKENIZER_MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def download_hint(name: str, root: Path) -> str:
    repo = name if name in hub.CHECKPOINTS else "Qwen3-TTS-12Hz-1.7B-CustomVoice"
    return f"{hub.manual_command(repo, root)}  (or: huggingface-cli download Qwen/{repo} --local-dir ...)"


# --------------------------------------------------------------------------- downloads
# A loader list offers each released checkpoint that is on disk nowhere as "<name> (download,
# <size>)". Only that entry downloads (when the folder is still missing; otherwise it loads the
# folder like the plain name); the plain name never downloads, so opening a shared workflow never
# starts a download the user did not pick.
_DOWNLOAD_ENTRY = re.compile(r"(?P<name>.+) \(download(?:, [^)]*)?\)")


def download_entry(name: str) -> str:
    return f"{name} (download, {hub.CHECKPOINTS[name].size})"


def model_choices(kind: str) -> list[str]:
    """A loader's list: the folders on disk, then download entries for the released checkpoints
    that are not (kind "model": the TTS checkpoints; "tokenizer": the speech tokenizer)."""
    have = list_model_folders("model" if kind == "model" else "any")
    wanted = [n for n in hub.CHECKPOINTS if (n == hub.TOKENIZER) == (kind == "tokenizer")]
    return have + [download_entry(n) for n in wanted if n not in have]


def parse_choice(value: str) -> tuple[str, bool]:
    """(folder name, whether the user chose to download it) for a loader's value."""
    m = _DOWNLOAD_ENTRY.fullmatch(value) if isinstance(value, str) else None
    if m and m["name"] in hub.CHECKPOINTS:
        return m["name"], True
    return value, False


def chosen_folder(value: str, what: str = "model") -> tuple[str, Path]:
    """(name, folder) for a loader's value; a download entry whose folder is missing downloads it
    into the first models/qwen-tts folder first, with the progress bar and Cancel."""
    name, fetch = parse_choice(value)
    if fetch and not any((root / name / "config.json").is_file() for root in model_roots()):
        roots = model_roots()
        if not roots:
            raise ModelFolderError(f"No models/{MODELS} folder is registered to download {name} into.")
        bar = comfy.utils.ProgressBar(1)
        hub.download(name, roots[0], on_progress=lambda done, total: bar.update_absolute(done, max(total, 1)),
                     check_interrupt=stop_if_interrupted)
    return name, find_model_folder(name, what)


def find_model_folder(name: str, what: str = "model") -> Path:
    """The folder of `name` under models/qwen-tts; a missing one gives a message that says which
    checkpoint to download and where to put it."""
    roots = model_roots()
    if not isinstance(name, str) or not name.strip():
        name = ""
    # the lexical half of the path policy (qwen_tts_core.paths); links in the models folders are the
    # owner's choice (checkpoints on another disk) and are followed
    if name and (leads_out_by_name(name) or any(p.startswith(".") and p != "." for p in re.split(r"[\\/]", name))):
        raise InputError(f"Invalid {what} folder name {name!r}; pick a folder under models/{MODELS}/.")
    for root in roots:
        folder = root / name
        if name and (folder / "config.json").is_file():
            return folder
    where = ", ".join(str(r) for r in roots) or f"models/{MODELS}"
    found = list_model_folders()
    first = roots[0] if roots else Path("models") / MODELS
    if not found:
        listing = "There are no Qwen3-TTS folders there yet."
    else:
        listing = f"Folders found: {', '.join(found)}."
    wanted = f"'{name}' " if name else ""
    pick = (f"To download it from here, choose '{download_entry(name)}' in the loader's list. "
            if name in hub.CHECKPOINTS else "")
    raise ModelFolderError(
        f"Qwen3-TTS {what} folder {wanted}not found in {where}. {listing} {pick}Or download the "
        f"checkpoint into its own folder there, e.g.: {download_hint(name, first)}. Checkpoints: "
        + "; ".join(f"{k} ({c.what})" for k, c in hub.CHECKPOINTS.items())
        + ". Then refresh the browser (R) and pick it in the loader.")


def find_voice_file(name: str) -> Path:
    roots = voice_roots()
    for root in roots:
        path = voice_path(root, name)
        if path.is_file():
            return path
    have = all_voices()
    where = ", ".join(str(r) for r in roots)
    raise InputError(f"No saved voice named {name!r} in {where}. "
                     + (f"Saved voices: {', '.join(have)}." if have else
                        "No voices saved yet: make one with 'Make Voice from Reference Audio' and 'Save Voice'."))


def all_voices() -> list[str]:
    return sorted({v for r in voice_roots() for v in list_voices(r)}, key=str.lower)


def voice_save_folder() -> Path:
    return voice_roots()[0]
