"""A machine-readable mark that speech is synthetic: Meta's AudioSeal (MIT, code and weights), its
published 16-bit generator and detector (`audioseal` on PyPI for the architecture, the weights from
the Hugging Face repository facebook/audioseal).

AudioSeal works on 16 kHz mono audio. `Watermarker.embed` resamples each window of the audio to
16 kHz, lets the generator make the watermark for it (a signal shaped to hide under the speech,
carrying a 16-bit message), resamples the watermark back to the audio's own rate and adds it: the
audio keeps its rate, length and everything above 8 kHz. `detect` resamples to 16 kHz and asks the
detector, which scores every 16 kHz sample (1/16000 s) as marked or not; the share of marked
samples is the score, and the 16 message bits are read from the whole clip.

Long audio goes through in windows (20 s, crossfaded over 1 s), so memory stays flat for any
length; `check_interrupt` is called between windows.

The weights (94 MB) are downloaded only on request (`download`, or the nodes' download entry) into
a folder of their own (ComfyUI's models/audioseal/), each file checked against its sha256 as
published on the Hub; files put there by hand are checked the same way before they are loaded,
and unpickled with torch's weights-only loader (only tensors and the omegaconf config they carry).

    python -m qwen_tts_core.watermark download --dir models/audioseal
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import inspect
import logging
import math
import os
import shutil
import sys
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import download as hub
from .errors import DownloadError, InputError, ModelFolderError, QwenTTSError, first_line

log = logging.getLogger("qwen_tts_core")

REPO = "facebook/audioseal"
RATE = 16000                 # what AudioSeal was trained at
BITS = 16
PACK_MESSAGE = 0x5154        # "QT": the message the generation nodes' watermark switch embeds
WINDOW_SECONDS = 20.0
CROSSFADE_SECONDS = 1.0
DETECT_CONTEXT_SECONDS = 1.0
DETECTION_THRESHOLD = 0.5    # a 16 kHz sample is marked when the detector's score is above this
HASH_CHUNK = 1 << 20

Check = Callable[[], None]
Progress = Callable[[int, int], None]          # (done, total)


@dataclass(frozen=True)
class WeightFile:
    filename: str
    card: str          # the model card in the audioseal package that describes its architecture
    sha256: str        # as the Hub lists it (huggingface.co/facebook/audioseal, file page)
    size: int          # bytes


GENERATOR = WeightFile("generator_base.pth", "audioseal_wm_16bits",
                       "7a845b5fbe9364a63a3909d8ab3fe064d13a76ae4c2e983573e08c69b7b51748", 58_805_980)
DETECTOR = WeightFile("detector_base.pth", "audioseal_detector_16bits",
                      "8a78e8a83584113523e161fc599fcab10fd0e94c04d2eb9d2fa1e9ec91ab69d9", 34_667_641)
WEIGHTS = (GENERATOR, DETECTOR)
SIZE = f"{sum(w.size for w in WEIGHTS) / 1e6:.0f} MB"


class WatermarkWeightsMissing(ModelFolderError):
    """The AudioSeal weights are not (all) in the folder."""


# --------------------------------------------------------------------------- messages
def message_bits(message: int) -> torch.Tensor:
    """0..65535 -> its 16 bits, most significant first."""
    if isinstance(message, bool) or not isinstance(message, int) or not 0 <= message < 1 << BITS:
        raise InputError(f"The watermark message must be a whole number from 0 to {(1 << BITS) - 1} "
                         f"(16 bits), got {message!r}.")
    return torch.tensor([(message >> (BITS - 1 - i)) & 1 for i in range(BITS)], dtype=torch.long)


def bits_message(bits) -> int:
    """16 bits (most significant first) -> 0..65535."""
    return sum(int(b) << (BITS - 1 - i) for i, b in enumerate(bits))


# --------------------------------------------------------------------------- weights on disk
def missing(folder) -> list[str]:
    return [w.filename for w in WEIGHTS if not (Path(folder) / w.filename).is_file()]


def manual_command(folder) -> str:
    return f'hf download {REPO} {" ".join(w.filename for w in WEIGHTS)} --local-dir "{folder}"'


def check_present(folder, how_to_get: str = "") -> Path:
    """The folder, if both weight files are in it; else WatermarkWeightsMissing saying what to do."""
    folder = Path(folder)
    lacking = missing(folder)
    if lacking:
        raise WatermarkWeightsMissing(
            f"The AudioSeal watermark weights are not in {folder} (missing: {', '.join(lacking)}). "
            f"{how_to_get}Or download them ({SIZE}) by hand: {manual_command(folder)}")
    return folder


_VERIFIED: dict = {}


def _sha256(path: Path, check: Check) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 * HASH_CHUNK):
            h.update(block)
            check()
    return h.hexdigest()


def verify(path: Path, weight: WeightFile, check: Check | None = None) -> None:
    """Refuses a file that is not the published one (damaged, truncated or another model),
    before anything reads it. Remembered per file size and modification time."""
    st = path.stat()
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns, weight.sha256)
    if key in _VERIFIED:
        return
    got = _sha256(path, check or (lambda: None))
    if got != weight.sha256:
        raise ModelFolderError(
            f"{path} is not the published AudioSeal {weight.filename}: its sha256 is {got}, the Hub lists "
            f"{weight.sha256} ({weight.size} bytes; it has {st.st_size}). Delete it and download it again: "
            f"{manual_command(path.parent)}")
    _VERIFIED[key] = True


# --------------------------------------------------------------------------- the models
def _architecture(weight: WeightFile):
    """The model of `weight`'s card in the audioseal package, with fresh (random) weights."""
    try:
        from audioseal.builder import AudioSealDetectorConfig, AudioSealWMConfig, create_detector, create_generator
        from audioseal.loader import AudioSeal, load_local_model_config
        from omegaconf import OmegaConf
    except ImportError as e:
        raise ModelFolderError(f"The watermark needs the 'audioseal' package ({first_line(e)}): "
                               "pip install audioseal omegaconf einops (see the pack's requirements.txt).") from None
    card = OmegaConf.to_container(load_local_model_config(weight.card))
    card.pop("checkpoint", None)             # a Hub URL: we never let the package download
    if weight is GENERATOR:
        return create_generator(AudioSeal.parse_config(card, AudioSealWMConfig, nbits=BITS)).eval()
    return create_detector(AudioSeal.parse_config(card, AudioSealDetectorConfig, nbits=BITS)).eval()


def new_generator():
    return _architecture(GENERATOR)


def new_detector():
    return _architecture(DETECTOR)


def _safe_globals() -> list:
    """What the published checkpoints pickle besides tensors (the Hub lists their imports): the
    training config as omegaconf containers."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, collections.defaultdict,
            dict, list, int]


def _read_state(path: Path) -> dict:
    """The state dict of a checkpoint, unpickled weights-only (no code runs)."""
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is None:
        raise ModelFolderError("Loading the AudioSeal weights safely needs torch 2.5 or newer "
                               f"(this is torch {torch.__version__}).")
    try:
        with safe(_safe_globals()):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle and torch raise many kinds)
        raise ModelFolderError(f"{path} cannot be read as an AudioSeal checkpoint ({first_line(e)}). "
                               f"Delete it and download it again: {manual_command(path.parent)}") from None
    if isinstance(ckpt, dict) and "best_state" in ckpt:
        ckpt = ckpt["best_state"]["model"]
    elif isinstance(ckpt, dict) and "model" in ckpt:
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict):
        raise ModelFolderError(f"{path} holds no AudioSeal weights.")
    return ckpt


def _load(folder, weight: WeightFile, check: Check | None):
    from audioseal.loader import convert_state_dict_for_scriptable_model, load_state_dict

    path = check_present(folder) / weight.filename
    verify(path, weight, check)
    model = _architecture(weight)
    try:
        with warnings.catch_warnings():          # the package folds weight norm with torch's old helper
            warnings.simplefilter("ignore", FutureWarning)
            load_state_dict(model, convert_state_dict_for_scriptable_model(_read_state(path)))
    except (RuntimeError, AssertionError, KeyError) as e:
        raise ModelFolderError(f"{path} does not fit the AudioSeal {weight.card} model ({first_line(e)}). "
                               f"Delete it and download it again: {manual_command(folder)}") from None
    return model.eval()


def load_generator(folder, check_interrupt: Check | None = None):
    return _load(folder, GENERATOR, check_interrupt)


def load_detector(folder, check_interrupt: Check | None = None):
    return _load(folder, DETECTOR, check_interrupt)


@contextlib.contextmanager
def _eager():
    """The audioseal package compiles its encoder with torch.compile on first use (tens of
    seconds, and a C compiler); plain eager mode is what we want in a server."""
    try:
        from audioseal.libs.moshi.utils.compile import no_compile
    except ImportError:
        no_compile = contextlib.nullcontext
    with torch.inference_mode(), no_compile():
        yield


# --------------------------------------------------------------------------- embed, detect
def _audio(audio, sample_rate, what: str) -> tuple[torch.Tensor, int]:
    """[T] or [C, T] float audio -> ([C, T] float32 on the CPU, rate)."""
    if not isinstance(audio, torch.Tensor):
        raise InputError(f"The {what} must be a tensor, got {type(audio).__name__}.")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) \
            or sample_rate != int(sample_rate) or not 1000 <= int(sample_rate) <= 768000:
        raise InputError(f"The {what} has no plausible sample rate ({sample_rate!r}).")
    x = audio.detach()
    x = x[None] if x.dim() == 1 else x
    if x.dim() != 2 or x.shape[1] == 0:
        raise InputError(f"The {what} has shape {tuple(audio.shape)}; expected [samples] or [channels, samples].")
    if not x.is_floating_point():
        raise InputError(f"The {what} holds {x.dtype} samples; expected float audio in [-1, 1].")
    x = x.to("cpu", torch.float32)
    bad = sum(int((~torch.isfinite(x[:, i:i + (1 << 20)])).sum()) for i in range(0, x.shape[1], 1 << 20))
    if bad:
        raise InputError(f"The {what} contains {bad} NaN/inf samples; it is damaged. Re-export or regenerate it.")
    return x, int(sample_rate)


def _resample(x: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    if rate == target:
        return x
    import torchaudio.functional as AF

    return AF.resample(x, rate, target)


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    """[..., m] -> [..., n]: cut, or padded with zeros (resampling rounds lengths)."""
    return x[..., :n] if x.shape[-1] >= n else torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def windows(n: int, window: int, crossfade: int) -> list[tuple[int, int]]:
    """[start, end) of overlapping windows covering n samples; consecutive ones share `crossfade`."""
    if n <= window:
        return [(0, n)]
    hop = window - crossfade
    count = math.ceil((n - crossfade) / hop)
    return [(k * hop, n if k == count - 1 else k * hop + window) for k in range(count)]


@dataclass
class Detection:
    score: float            # share of the audio the detector marks as watermarked (0..1)
    message: int            # the 16-bit message read from it (random when there is no watermark)
    bit_confidence: float   # how far the bits are from undecided (0: coin flips, 1: certain)
    seconds: float
    channel: int = 0        # the channel of the best score

    @property
    def watermarked(self) -> bool:
        return self.score > DETECTION_THRESHOLD

    def summary(self) -> str:
        if not self.watermarked:
            return (f"No AudioSeal watermark found: {self.score:.0%} of {self.seconds:.1f} s scored as marked "
                    f"(a marked clip scores over {DETECTION_THRESHOLD:.0%}).")
        return (f"AudioSeal watermark found in {self.score:.0%} of {self.seconds:.1f} s; message {self.message} "
                f"(0x{self.message:04X}, bits {self.message:016b}), bit confidence {self.bit_confidence:.0%}.")


class Watermarker:
    """AudioSeal's generator and/or detector, run on `device` (moved there for each call and back
    to the CPU after, so they hold no GPU memory between calls)."""

    def __init__(self, generator=None, detector=None):
        self.generator, self.detector = generator, detector

    @contextlib.contextmanager
    def _on(self, module, device):
        device = torch.device(device or "cpu")
        module.to(device)
        try:
            yield device
        finally:
            if device.type != "cpu":
                module.to("cpu")

    def embed(self, audio, sample_rate, message: int = PACK_MESSAGE, *, device=None,
              check_interrupt: Check | None = None, on_progress: Progress | None = None) -> torch.Tensor:
        """`audio` ([T] or [C, T]) with the watermark carrying `message` (0..65535) added to
        every channel; same shape, rate and length. [T] in gives [T] out."""
        if self.generator is None:
            raise InputError("No watermark generator loaded.")
        x, rate = _audio(audio, sample_rate, "audio to watermark")
        bits = message_bits(message)
        check = check_interrupt or (lambda: None)
        n = x.shape[1]
        fade = round(CROSSFADE_SECONDS * rate)
        out = x.clone()
        spans = windows(n, round(WINDOW_SECONDS * rate), fade)
        with self._on(self.generator, device) as dev, _eager():
            for k, (a, b) in enumerate(spans):
                check()
                piece = _resample(x[:, a:b], rate, RATE).to(dev)[:, None]           # [C, 1, t16]
                mark = self.generator.get_watermark(piece, message=bits.to(dev)[None].repeat(piece.shape[0], 1))
                mark = _fit(_resample(mark[:, 0].float().cpu(), RATE, rate), b - a)
                weight = torch.ones(b - a)
                if k > 0:
                    weight[:fade] = torch.linspace(0, 1, fade + 2)[1:-1]
                if k < len(spans) - 1:
                    weight[-fade:] = torch.linspace(1, 0, fade + 2)[1:-1]
                out[:, a:b] += mark * weight
                if on_progress is not None:
                    on_progress(k + 1, len(spans))
        return out[0] if audio.dim() == 1 else out

    def detect(self, audio, sample_rate, *, device=None, check_interrupt: Check | None = None,
               on_progress: Progress | None = None) -> Detection:
        """Whether `audio` carries an AudioSeal watermark, and its message (best channel)."""
        if self.detector is None:
            raise InputError("No watermark detector loaded.")
        x, rate = _audio(audio, sample_rate, "audio to check")
        check = check_interrupt or (lambda: None)
        n = x.shape[1]
        window, context = round(WINDOW_SECONDS * rate), round(DETECT_CONTEXT_SECONDS * rate)
        marked = torch.zeros(x.shape[0], dtype=torch.float64)
        logits = torch.zeros(x.shape[0], BITS, dtype=torch.float64)
        counted = 0
        with self._on(self.detector, device) as dev, _eager():
            for a in range(0, n, window):
                check()
                b = min(n, a + window)
                lo, hi = max(0, a - context), min(n, b + context)
                piece = _resample(x[:, lo:hi], rate, RATE).to(dev)[:, None]
                scores, bit_p = self.detector(piece)                   # [C, 2, t16], [C, 16]
                start, stop = round((a - lo) * RATE / rate), round((b - lo) * RATE / rate)
                core = scores[:, 1, start:stop].float().cpu()
                marked += (core > DETECTION_THRESHOLD).sum(-1).double()
                # the detector gives sigmoid(mean of its per-sample bit logits) over the piece;
                # back to logits, so the pieces average into the mean over the whole clip
                p = bit_p.double().cpu().clamp(1e-12, 1 - 1e-12)
                logits += torch.log(p / (1 - p)) * core.shape[-1]
                counted += core.shape[-1]
                if on_progress is not None:
                    on_progress(min(n, b), n)
        scores = marked / max(counted, 1)
        best = int(scores.argmax())
        p = torch.sigmoid(logits[best] / max(counted, 1))
        return Detection(float(scores[best]), bits_message((p > 0.5).long().tolist()),
                         float((p - 0.5).abs().mean() * 2), n / rate, best)


# --------------------------------------------------------------------------- download
# Not through qwen_tts_core.download.download (its helpers, yes): that one is for multi-GB checkpoints (a cut file continues
# with a Range request, which hf_hub_download no longer allows) into <root>/<name>/; these two files
# are 93 MB, go straight into models/audioseal/ and are pinned to their published sha256.


def download(folder, *, on_progress: Progress | None = None, check_interrupt: Check | None = None,
             endpoint: str | None = None) -> Path:
    """Downloads the weight files that `folder` lacks from the Hub (huggingface_hub: resumes a
    stopped download, honours HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE), checks each against its
    published sha256 and only then puts it in place. Returns the folder; at once, without any
    network access, when both files are there."""
    folder = Path(folder)
    todo = [w for w in WEIGHTS if not (folder / w.filename).is_file()]
    if not todo:
        return folder
    check = check_interrupt or (lambda: None)
    staging = folder / ".downloading"
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot write to {folder} ({e.strerror or e}); make it writable or download by "
                            f"hand: {manual_command(folder)}") from None
    needed = sum(w.size for w in todo)
    free = shutil.disk_usage(staging).free
    if free < needed:
        raise DownloadError(f"The AudioSeal weights need {needed / 1e6:.0f} MB on the disk of {folder}, which "
                            f"has {free / 1e6:.0f} MB free. Free some space and download again.")
    total, done = sum(w.size for w in WEIGHTS), sum(w.size for w in WEIGHTS if w not in todo)
    for w in todo:
        check()
        path = _fetch(w, staging, endpoint, on_progress, check, done, total)
        try:
            verify(path, w, check)
        except ModelFolderError:
            path.unlink(missing_ok=True)
            raise DownloadError(
                f"{w.filename} arrived from {REPO} but is not the published file (its sha256 differs from "
                f"{w.sha256}); it was deleted. If HF_ENDPOINT points to a mirror, it serves another file; "
                f"try again, or download by hand: {manual_command(folder)}") from None
        os.replace(path, folder / w.filename)
        done += w.size
        if on_progress is not None:
            on_progress(done, total)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("Downloaded the AudioSeal watermark weights into %s; sha256 of each checked", folder)
    return folder


def _fetch(w: WeightFile, staging: Path, endpoint: str | None, on_progress: Progress | None, check: Check,
           done: int, total: int) -> Path:
    """One file into the staging folder with huggingface_hub (progress and interrupt within the
    file where its version takes a progress-bar class; between files otherwise)."""
    import huggingface_hub

    options = {}
    if "tqdm_class" in inspect.signature(huggingface_hub.hf_hub_download).parameters:
        options["tqdm_class"] = _progress_bar(on_progress, check, done, total)
    if hub.offline():
        raise DownloadError(_offline(staging.parent, "HF_HUB_OFFLINE is set"))
    try:
        return Path(huggingface_hub.hf_hub_download(REPO, w.filename, local_dir=staging,
                                                    endpoint=hub.hub_endpoint(endpoint), library_name=hub.LIBRARY,
                                                    **options))
    except OSError as e:
        if hub.disk_full(e):
            raise DownloadError(f"The disk of {staging.parent} filled up while downloading {w.filename} "
                                f"({w.size / 1e6:.0f} MB). What arrived is kept in {staging}; free some "
                                "space and download again to continue.") from None
        return _download_failed(e, w, staging)
    except Exception as e:  # noqa: BLE001  (huggingface_hub's HTTP errors differ between versions)
        if type(e).__module__.split(".")[0] not in ("huggingface_hub", "requests", "httpx", "urllib3"):
            raise
        return _download_failed(e, w, staging)


def _download_failed(e: Exception, w: WeightFile, staging: Path):
    name = type(e).__name__
    if name in ("RepositoryNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError", "GatedRepoError"):
        raise DownloadError(f"The Hub has no {REPO}/{w.filename} ({name}); if HF_ENDPOINT points to a mirror, "
                            f"it lacks it. Download by hand: {manual_command(staging.parent)}") from None
    raise DownloadError(_offline(staging.parent, f"{w.filename}: {first_line(e)}")) from None


def _offline(folder: Path, reason: str) -> str:
    return (f"Cannot download the AudioSeal watermark weights: {reason}. Is this computer offline, or does it "
            f"need a proxy (HTTPS_PROXY) or a Hub mirror (HF_ENDPOINT)? What arrived is kept and the next "
            f"try continues. On a computer with internet run:  {manual_command(folder)}  and copy the two "
            f"files into {folder}.")


def _progress_bar(on_progress: Progress | None, check: Check, done: int, total: int):
    """A tqdm class for huggingface_hub that reports bytes and checks the interrupt instead of
    drawing a bar."""
    from tqdm.auto import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.got = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            self.got += int(n or 0)
            if on_progress is not None:
                on_progress(min(total, done + self.got), total)
            check()

    return Bar


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qwen_tts_core.watermark",
                                 description="Download the AudioSeal watermark weights (sha256 checked).")
    ap.add_argument("command", choices=["download"])
    ap.add_argument("--dir", default=os.path.join("models", "audioseal"),
                    help="the folder to download into (default: models/audioseal)")
    args = ap.parse_args(argv)
    try:
        folder = download(args.dir, on_progress=lambda d, t: print(
            f"\r{d / 1e6:.0f} of {t / 1e6:.0f} MB", end="", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("\nstopped; run the same command again to continue", file=sys.stderr)
        return 130
    except QwenTTSError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    print(f"\nAudioSeal weights: {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
