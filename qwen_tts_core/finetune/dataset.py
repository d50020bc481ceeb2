"""Training data for a new speaker: pairs of audio + transcript, checked clip by clip, turned
into speech codes by the model's own speech tokenizer and cached on disk.

Three layouts are read:
    folder        name.wav + name.txt pairs (subfolders too)
    metadata.csv  LJSpeech style: `id|transcript[|normalized transcript]`, audio in wavs/<id>.wav
                  (or <id>.wav beside the csv)
    .jsonl        the official recipe's rows {"audio", "text", "ref_audio"?, "language"?};
                  paths relative to the file

    data = scan("my_voice/")                      # checks every clip, reads no model
    print(data.report())                          # clips, minutes, what was skipped and why
    items = encode(data, tts.codec, codec_fingerprint(tts.folder))   # codes, cached

Clips that cannot be used are skipped and listed with the reason; only a dataset with no usable
clip at all is an error. `scan(..., roots=[input_dir])` (the ComfyUI nodes) also refuses any file
the dataset leads to outside those folders (qwen_tts_core.paths): a linked clip, a metadata.csv id
or a .jsonl path that points out stops the scan before anything there is read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import audio as audio_io
from .. import speech_codes
from ..duration import expected_seconds
from ..errors import InputError
from ..paths import Roots, confine, resolve
from ..text import check_text
from .output import fingerprint
from .objective import Item

log = logging.getLogger("qwen_tts_core")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MIN_SECONDS, MAX_SECONDS = 1.0, 30.0
MAX_TEXT_RATIO = 10.0        # a transcript taking 10x longer to say than its clip lasts is wrong
SILENT_RMS = 1e-3            # -60 dBFS
CLIP_LEVEL = 0.99            # |sample| at or above this counts as full scale
CLIPPED_FRACTION = 1e-3      # more than 0.1% of the samples at full scale: clipped
CACHE_FOLDER = ".qwen-tts-codes"


@dataclass
class Clip:
    name: str                 # file stem (folder layout), id (metadata.csv) or line (jsonl)
    audio: Path
    text: str
    language: str = "auto"
    seconds: float = 0.0


@dataclass
class Rejected:
    name: str
    reason: str


@dataclass
class VoiceDataset:
    root: Path                # the folder (codes are cached under it)
    layout: str               # "folder", "metadata.csv" or "jsonl"
    clips: list[Clip]
    rejected: list[Rejected] = field(default_factory=list)
    ref_audio: Path | None = None   # the clip whose x-vector becomes the speaker embedding

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.clips)

    def report(self, limit: int = 20) -> str:
        length = f"{self.seconds:.1f} s" if self.seconds < 60 else f"{self.seconds / 60:.1f} min"
        lines = [f"{len(self.clips)} clips, {length} of speech ({self.layout} layout "
                 f"in {self.root}); speaker reference: {self.ref_audio.name if self.ref_audio else 'none'}"]
        if self.rejected:
            lines.append(f"{len(self.rejected)} rejected:")
            lines += [f"  {r.name}: {r.reason}" for r in self.rejected[:limit]]
            if len(self.rejected) > limit:
                lines.append(f"  ... and {len(self.rejected) - limit} more")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """Changes when a clip, transcript or language changes (checked on resume)."""
        h = hashlib.sha256()
        for c in self.clips:
            st = c.audio.stat()
            h.update(json.dumps([c.name, c.text, c.language, st.st_size, st.st_mtime_ns]).encode())
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ audio
def read_audio(path: Path) -> tuple[torch.Tensor, int]:
    """An audio file -> ([channels, samples] float32, sample rate). PCM WAV is read by the
    standard library; other formats (and float WAV) need the `soundfile` package."""
    if path.suffix.lower() == ".wav":
        try:
            return audio_io.read_wav(path)
        except (wave.Error, EOFError, InputError):
            pass                     # float or compressed WAV: soundfile may read it
    try:
        import soundfile
    except ImportError:
        raise InputError(f"{path.name}: this audio format cannot be read here. Convert it to 16-bit PCM "
                         f"WAV (e.g. ffmpeg -i \"{path.name}\" -ar 24000 -ac 1 out.wav) or "
                         "pip install soundfile.") from None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:          # soundfile raises its own error types
        raise InputError(f"{path.name} is not a readable audio file ({e}).") from None
    return torch.from_numpy(data).t().contiguous(), int(rate)


def check_clip(wav: torch.Tensor, rate: int, text: str, language: str) -> tuple[torch.Tensor, str | None]:
    """-> (mono 24 kHz audio, None) for a usable clip, or (.., the reason it is not)."""
    x = audio_io.to_mono(wav)
    if x.numel() and int((x.abs() >= CLIP_LEVEL).sum()) > CLIPPED_FRACTION * x.numel():
        share = 100 * float((x.abs() >= CLIP_LEVEL).float().mean())
        return x, (f"clipped ({share:.1f}% of the samples at full scale): re-record it with lower "
                   "input gain, or leave it out")
    try:
        x = audio_io.prepare(wav, rate, "clip")
    except InputError as e:
        return x, str(e)
    seconds = x.numel() / audio_io.MODEL_RATE
    if seconds < MIN_SECONDS:
        return x, f"shorter than {MIN_SECONDS:.0f} s ({seconds:.2f} s)"
    if seconds > MAX_SECONDS:
        return x, f"longer than {MAX_SECONDS:.0f} s ({seconds:.1f} s): split it at sentence ends"
    if float(x.pow(2).mean().sqrt()) < SILENT_RMS:
        return x, "silent (below -60 dBFS)"
    try:
        check_text(text, "the transcript")          # the rule every spoken text follows
    except InputError as e:
        return x, str(e)
    say = expected_seconds(text, language)
    if say > MAX_TEXT_RATIO * seconds:
        return x, (f"the transcript would take ~{say:.0f} s to say but the clip lasts {seconds:.1f} s: "
                   "it belongs to another clip, or the clip is cut")
    return x, None


# ------------------------------------------------------------------------------------------ layouts
def _read_text(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8-sig").split())
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not UTF-8 text; save the transcript as UTF-8.") from None


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _check_links(root: Path, roots: Roots | None) -> None:
    """Every link in a dataset folder must lead inside `roots`, whether or not its target exists
    (so a refusal says nothing about what is outside) and whether or not the scan would read it."""
    if roots is None:
        return
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and _visible(path, root):
            confine(path, roots, f"what {path.relative_to(root).as_posix()} links to", "the dataset folder")


def _folder_pairs(root: Path, language: str) -> tuple[list[Clip], list[Rejected]]:
    audio = {p.with_suffix(""): p for p in sorted(root.rglob("*"))
             if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file() and _visible(p, root)}
    texts = {p.with_suffix(""): p for p in sorted(root.rglob("*.txt")) if p.is_file() and _visible(p, root)}
    if not audio and not texts:
        raise InputError(f"{root} holds no audio files. Put name.wav + name.txt pairs in it (the .txt holds "
                         "what is said in the clip), or an LJSpeech-style metadata.csv, or a .jsonl file.")
    clips, rejected = [], []
    for stem, path in audio.items():
        name = path.relative_to(root).as_posix()
        if stem not in texts:
            rejected.append(Rejected(name, f"no transcript: add {path.with_suffix('.txt').name} with what is said"))
        else:
            clips.append(Clip(name, path, _read_text(texts[stem]), language))
    for stem, path in texts.items():
        if stem not in audio:
            rejected.append(Rejected(path.relative_to(root).as_posix(),
                                     f"transcript without audio (no {path.stem}.wav beside it)"))
    return clips, rejected


def _metadata_csv(csv: Path, language: str, roots: Roots | None) -> tuple[list[Clip], list[Rejected]]:
    root = csv.parent
    clips, rejected = [], []
    lines = csv.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < 2:
            rejected.append(Rejected(f"metadata.csv line {number}", "expected id|transcript"))
            continue
        clip_id = cols[0].strip()
        text = " ".join((cols[2] if len(cols) > 2 and cols[2].strip() else cols[1]).split())
        names = [clip_id] if Path(clip_id).suffix.lower() in AUDIO_EXTENSIONS else \
            [clip_id + ext for ext in AUDIO_EXTENSIONS]
        where = dict(what=f"the audio of metadata.csv line {number}", relative_to="the csv's folder or its wavs/")
        candidates = [resolve(n, roots, base=root / d, **where) for n in names for d in ("wavs", ".")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            rejected.append(Rejected(clip_id, f"audio not found (looked for wavs/{names[0]} and {names[0]})"))
            continue
        clips.append(Clip(clip_id, found, text, language))
    return clips, rejected


def _jsonl(path: Path, language: str, roots: Roots | None) -> tuple[list[Clip], list[Rejected], Path | None]:
    root = path.parent
    clips, rejected, refs = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        name = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            rejected.append(Rejected(name, f"not valid JSON ({e.msg})"))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("audio"), str) or not isinstance(row.get("text"), str):
            rejected.append(Rejected(name, 'needs "audio" (a path) and "text"'))
            continue
        where = dict(roots=roots, base=root, relative_to="the .jsonl file's folder")
        audio = resolve(row["audio"], what=f"the audio of {name}", **where)
        ref = resolve(row["ref_audio"], what=f"the ref_audio of {name}", **where) \
            if isinstance(row.get("ref_audio"), str) else None
        if not audio.is_file():
            rejected.append(Rejected(name, f"audio not found: {row['audio']}"))
            continue
        if ref is not None:
            refs.append(ref)
        lang = str(row.get("language") or language).strip().lower()
        clips.append(Clip(f"{name} ({Path(row['audio']).name})", audio, " ".join(row["text"].split()), lang))
    return clips, rejected, (refs[0] if refs else None)


# ------------------------------------------------------------------------------------------ scan
def scan(path: str | Path, language: str = "auto", ref_audio: str | Path | None = None,
         roots: Roots | None = None) -> VoiceDataset:
    """Finds and checks every clip of a dataset (any of the three layouts); reads no model.
    `ref_audio` (default: the dataset's own reference, else its longest clip) gives the x-vector
    of the new speaker. `roots`: the folders that the dataset, `ref_audio` and every file they
    name must lie in (links followed; qwen_tts_core.paths); None: anywhere."""
    path = confine(Path(path).expanduser() if roots is None else Path(path), roots, "the dataset")
    ref = confine(Path(ref_audio).expanduser() if roots is None else Path(ref_audio), roots,
                  "the reference clip", "the dataset folder") if ref_audio else None
    if not path.exists():
        raise InputError(f"Dataset not found: {path}. Give a folder of name.wav + name.txt pairs, a "
                         "folder with an LJSpeech-style metadata.csv, or a .jsonl file.")
    language = (language or "auto").strip().lower()
    dataset_ref = None
    if path.is_dir():
        _check_links(path, roots)
    if path.is_file():
        if path.suffix.lower() != ".jsonl":
            raise InputError(f"{path.name} is a file but not a .jsonl dataset; give the folder that holds "
                             "the clips, or a .jsonl file.")
        root, layout = path.parent, "jsonl"
        clips, rejected, dataset_ref = _jsonl(path, language, roots)
    elif (path / "metadata.csv").is_file():
        root, layout = path, "metadata.csv"
        clips, rejected = _metadata_csv(path / "metadata.csv", language, roots)
    else:
        root, layout = path, "folder"
        clips, rejected = _folder_pairs(path, language)
    usable = []
    for clip in clips:
        try:
            wav, rate = read_audio(clip.audio)
        except (InputError, OSError) as e:
            rejected.append(Rejected(clip.name, str(e)))
            continue
        x, problem = check_clip(wav, rate, clip.text, clip.language)
        if problem:
            rejected.append(Rejected(clip.name, problem))
            continue
        clip.seconds = x.numel() / audio_io.MODEL_RATE
        usable.append(clip)
    data = VoiceDataset(root, layout, usable, rejected)
    if not usable:
        raise InputError(f"No usable clip in {path}:\n" + "\n".join(data.report().splitlines()[1:]))
    if ref is not None:
        if not ref.is_file():
            raise InputError(f"Reference audio not found: {ref}.")
        data.ref_audio = ref
    else:
        data.ref_audio = dataset_ref if dataset_ref and dataset_ref.is_file() else \
            max(usable, key=lambda c: c.seconds).audio
    return data


def reference_clip(data: VoiceDataset) -> tuple[torch.Tensor, int]:
    """The speaker reference as read from disk (checked by the speaker-embedding code)."""
    return read_audio(data.ref_audio)


# ------------------------------------------------------------------------------------------ codes
def codec_fingerprint(model_folder: str | Path) -> str:
    """Identifies a speech tokenizer by its config and weights, so that cached codes are never
    reused with another tokenizer."""
    folder = speech_codes.tokenizer_folder(model_folder)
    return fingerprint(folder / "config.json", *sorted(folder.glob("*.safetensors")))


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def _save_codes(path: Path, codes: torch.Tensor) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"codes": codes.to(torch.int16).contiguous()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_codes(path: Path) -> torch.Tensor | None:
    from safetensors.torch import load_file

    try:
        codes = load_file(str(path))["codes"].to(torch.int64)
        return speech_codes.check_codes(codes, "cached codes") if codes.shape[0] else None
    except Exception:   # a damaged cache file (any error safetensors raises) is encoded again
        return None


def encode(data: VoiceDataset, codec, fingerprint: str, cache_dir: str | Path | None = None,
           on_clip=None) -> list[Item]:
    """Speech codes of every clip, from `<cache_dir>` (default: `<dataset>/.qwen-tts-codes/`)
    when this tokenizer encoded the same audio before. `on_clip(done, total)` after each clip
    (progress; may raise to stop)."""
    cache = Path(cache_dir) if cache_dir else data.root / CACHE_FOLDER
    items, cache_ok = [], True
    for i, clip in enumerate(data.clips):
        path = cache / f"{_file_hash(clip.audio)}-{fingerprint}.safetensors"
        codes = _load_codes(path) if path.is_file() else None
        if codes is None:
            wav, rate = read_audio(clip.audio)
            codes = speech_codes.encode(codec, wav, rate)
            if cache_ok:
                try:
                    _save_codes(path, codes)
                except OSError as e:
                    cache_ok = False
                    log.warning("Cannot cache speech codes in %s (%s); they will be encoded again next time.",
                                cache, e)
        items.append(Item(clip.text, codes, clip.language))
        if on_clip is not None:
            on_clip(i + 1, len(data.clips))
    return items
