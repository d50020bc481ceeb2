"""Downloads a released Qwen3-TTS checkpoint from the Hugging Face Hub into `<root>/<name>/`, only
when asked (the ComfyUI loaders' "(download)" entries, or this module's command line):

    python -m qwen_tts_core.download Qwen3-TTS-12Hz-1.7B-CustomVoice --dir models/qwen-tts

huggingface_hub does the talking: `HfApi.model_info(files_metadata=True)` lists the repository's
commit and its files with their sizes and hashes; for each file of that commit
`get_hf_file_metadata` finds where its bytes are (the Hub, its CDN, or Xet storage) and `http_get`
or, when hf_xet is installed and the file is in Xet storage, `xet_get` fetches them. So the
library brings the user's token (never sent on to the CDN), HF_ENDPOINT, proxies, retries that
continue a cut answer with a Range request, and the Xet transfer; its progress hook (`tqdm_class`)
carries the bytes and the interrupt check. Around it this module keeps what a ComfyUI user relies on:

- Files go into `<root>/.downloading/<name>/` (one not all there yet as `<path>.part`). That folder
  becomes `<root>/<name>` in one rename once every file is there and verified, so a half download
  is never taken for a model. What a stopped or failed download got, down to the bytes of the file
  it was fetching, is kept and continued next time, unless the repository has moved to another
  commit meanwhile (then it starts again).
- Every file is checked against the Hub's hash (sha256 for LFS files, the git blob sha1 for the
  others); the library checks sizes only. A listing without a hash is refused, but for small
  .json/.txt files, which are checked by size.
- A full disk stops the download with how much more space it needs.

Why not `hf_hub_download` / `snapshot_download` (tests/test_download.py holds each point):
- Since huggingface_hub PR 4306 (June 2026; the 2.4 of transformers 5 here has it) `hf_hub_download`
  writes each file to a temporary file of its own and deletes it on any failure ("resuming a failed
  download is no longer possible"): a Cancel or a lost connection at 3 GB of a 3.8 GB weights file
  would start that file again from nothing. The `.part` here is continued with a Range request
  (test_a_stopped_download_keeps_its_bytes_and_the_next_one_continues).
- On the 0.x line (transformers 4.57 ships 0.36, the last of that line) `hf_hub_download` takes no
  progress hook: a 3.8 GB file would show no progress and Cancel would wait for its end. There
  `http_get` takes a bar made already, `_tqdm_bar`, the one way that line offers.
Limits that remain (the library's): it reads in chunks of `constants.DOWNLOAD_CHUNK_SIZE` (10 MiB)
and calls the hook before writing each, so progress moves and Cancel is seen every 10 MiB and the
chunk in hand at a Cancel is not kept. hf_xet calls the hook from a thread of its own and prints
and drops what the hook raises, so a Xet transfer cannot be stopped mid-file: the interrupt is
checked in the caller's thread only (so that ComfyUI's flag is not consumed where nobody sees it),
which for Xet is when the file is done; and a stopped Xet file starts again (hf_xet's own chunk
cache keeps what it fetched).
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import inspect
import logging
import os
import re
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from .errors import DownloadError, InputError, QwenTTSError, first_line

log = logging.getLogger("qwen_tts_core")

OWNER = "Qwen"                    # the checkpoints are the Hub repositories Qwen/<name>
LIBRARY = "qwen-tts-comfyui"      # how the requests introduce themselves (user agent)
STAGING = ".downloading"          # <root>/.downloading/<name>/ while a download is under way
COMMIT_FILE = ".commit"           # in the staging folder: the commit its files belong to
PART = ".part"                    # in the staging folder: <path>.part, a file not all there yet
RETRY_WAIT = 1.0                  # seconds between attempts
TIMEOUT = 30.0                    # seconds of silence from the Hub before the listing fails
HASH_BLOCK = 16 << 20             # bytes hashed between two interrupt checks
UNHASHED = (".json", ".txt")      # files the Hub may list without a hash, if at most UNHASHED_MAX
UNHASHED_MAX = 64 << 10           # bytes (small config files); any other file without one is refused


@dataclass(frozen=True)
class Checkpoint:
    what: str                          # what it is for
    size: str                          # the download's size as the Hub shows it
    repo: str = ""                     # the Hub repository; default Qwen/<name>
    files: tuple[str, ...] = ()        # only these files of it; default every file
    # A folder is complete when it holds this file: the first of `files`, else config.json.

    def marker(self) -> str:
        return self.files[0] if self.files else "config.json"


CHECKPOINTS = {
    "Qwen3-TTS-12Hz-1.7B-CustomVoice": Checkpoint("built-in speakers with style instructions", "4.5 GB"),
    "Qwen3-TTS-12Hz-0.6B-CustomVoice": Checkpoint("built-in speakers, smaller", "2.5 GB"),
    "Qwen3-TTS-12Hz-1.7B-VoiceDesign": Checkpoint("a voice from a description", "4.5 GB"),
    "Qwen3-TTS-12Hz-1.7B-Base": Checkpoint("voice cloning", "4.5 GB"),
    "Qwen3-TTS-12Hz-0.6B-Base": Checkpoint("voice cloning, smaller", "2.5 GB"),
    "Qwen3-TTS-Tokenizer-12Hz": Checkpoint("the speech tokenizer alone", "0.7 GB"),
}
TOKENIZER = "Qwen3-TTS-Tokenizer-12Hz"

ProgressCallback = Callable[[int, int], None]      # (bytes done, bytes in all)


def repo_id(name: str) -> str:
    return CHECKPOINTS[name].repo or f"{OWNER}/{name}"


def is_downloaded(name: str, root) -> bool:
    return (Path(root) / name / CHECKPOINTS[name].marker()).is_file()


def manual_command(name: str, root) -> str:
    """The shell command that downloads `name` by hand into the same folder."""
    entry = CHECKPOINTS.get(name)
    files = "".join(f" {f}" for f in entry.files) if entry else ""
    repo = repo_id(name) if entry else f"{OWNER}/{name}"
    return f'hf download {repo}{files} --local-dir "{Path(root) / name}"'


@dataclass(frozen=True)
class RemoteFile:
    path: str                  # relative to the repository root, "/"-separated
    size: int
    sha256: str | None         # LFS files
    git_sha1: str | None       # other files: the git blob id


def download(name: str, root, *, on_progress: ProgressCallback | None = None,
             check_interrupt: Callable[[], None] | None = None, endpoint: str | None = None) -> Path:
    """Downloads checkpoint `name` into `<root>/<name>` and returns that folder (at once, without
    any network access, if it is already complete). `on_progress(done, total)` gets bytes;
    `check_interrupt()` is called between chunks and may raise to stop: what was downloaded is
    kept and the next call continues from there. `endpoint`: default $HF_ENDPOINT or the Hub."""
    if name not in CHECKPOINTS:
        raise InputError(f"Unknown checkpoint {name!r}; downloadable: {', '.join(CHECKPOINTS)}.")
    root = Path(root)
    final = root / name
    marker = CHECKPOINTS[name].marker()
    if is_downloaded(name, root):
        return final
    if final.exists():
        raise DownloadError(f"{final} exists but holds no {marker} (a download by hand that did not "
                            f"finish?). Finish it with: {manual_command(name, root)}  or move the folder "
                            "away and download again.")
    endpoint = hub_endpoint(endpoint)
    if offline():
        raise DownloadError(_offline_message(name, root, "HF_HUB_OFFLINE is set"))
    commit, files = list_files(name, root, endpoint)
    staging = root / STAGING / name
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot write to {root} ({e}); make it writable or download by hand: "
                            f"{manual_command(name, root)}") from None
    lock = staging.parent / f"{name}.lock"
    with _locked(lock, name):
        if is_downloaded(name, root):      # another process finished it while we listed
            log.info("%s was downloaded into %s by another process meanwhile", name, final)
        else:
            job = _Job(name, root, staging, commit, endpoint, _DownloadProgress(on_progress, sum(f.size for f in files)),
                       check_interrupt or (lambda: None))
            _download_staged(job, files)
    _tidy(lock)
    return final


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub's address: `endpoint`, else $HF_ENDPOINT (read now, so a mirror set after import
    counts), else huggingface_hub's default."""
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


def offline() -> bool:
    from huggingface_hub import constants

    return (os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
            or bool(constants.HF_HUB_OFFLINE))


def _offline_message(name: str, root: Path, reason: str) -> str:
    return (f"Cannot download {name}: {reason}. Is this computer offline, or does it need a proxy "
            f"(HTTPS_PROXY) or a Hub mirror (HF_ENDPOINT)? Nothing was downloaded. On a computer with "
            f"internet run:  {manual_command(name, root)}  and copy the folder to {root / name} "
            f"(config.json, model.safetensors, the text tokenizer files and speech_tokenizer/).")


# --------------------------------------------------------------------------- the file list
def list_files(name: str, root, endpoint: str) -> tuple[str, list[RemoteFile]]:
    """(commit, files) of checkpoint `name`'s repository on its main branch, as the Hub at
    `endpoint` lists them; refuses a listing it could not verify a download against."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    root, repo, entry = Path(root), repo_id(name), CHECKPOINTS[name]
    try:
        info = HfApi(endpoint=endpoint, library_name=LIBRARY).model_info(
            repo, files_metadata=True, timeout=TIMEOUT)
    except RepositoryNotFoundError:
        raise DownloadError(f"{endpoint} has no repository {repo} (or wants a login: hf auth login). "
                            f"If HF_ENDPOINT points to a mirror, it lacks this model; download by hand: "
                            f"{manual_command(name, root)}") from None
    except HfHubHTTPError as e:
        raise DownloadError(f"{endpoint} answered HTTP {_status(e) or 'an error'} for {repo}; try again "
                            f"later or download by hand: {manual_command(name, root)}") from None
    except Exception as e:
        if not network_error(e):
            raise
        raise DownloadError(_offline_message(name, root, f"{endpoint} cannot be reached ({e})")) from None
    commit = info.sha or ""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise DownloadError(f"{endpoint} gave no commit id for {repo} (got {commit!r}); is HF_ENDPOINT a Hub?")
    files = []
    for s in info.siblings or []:
        if entry.files and s.rfilename not in entry.files:
            continue
        lfs = s.lfs
        sha256 = (lfs["sha256"] if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        size = (lfs["size"] if isinstance(lfs, dict) else getattr(lfs, "size", None)) if lfs else s.size
        if size is None:
            raise DownloadError(f"{endpoint} listed {repo} without file sizes; is HF_ENDPOINT a Hub?")
        f = RemoteFile(_safe_path(s.rfilename, endpoint), int(size), sha256, None if lfs else s.blob_id)
        if not (f.sha256 or f.git_sha1 or (f.path.endswith(UNHASHED) and f.size <= UNHASHED_MAX)):
            raise DownloadError(
                f"{endpoint} lists {f.path} of {repo} ({f.size} bytes) without a hash (neither sha256 nor "
                "git blob id), so a damaged copy could not be told from a good one; nothing downloaded. "
                f"If HF_ENDPOINT points to a mirror, use the Hub itself, or download by hand: "
                f"{manual_command(name, root)}")
        files.append(f)
    if not any(f.path == entry.marker() for f in files):
        raise DownloadError(f"{endpoint}: {repo} has no {entry.marker()}; nothing downloaded.")
    return commit, files


def _safe_path(path: str, endpoint: str) -> str:
    parts = PurePosixPath(path).parts
    if (not parts or path.startswith("/") or "\\" in path or ":" in path
            or any(p in (".", "..") for p in parts)):
        raise DownloadError(f"{endpoint} listed a file outside the model folder ({path!r}); nothing "
                            "downloaded. Check HF_ENDPOINT.")
    return path


def _status(e: BaseException) -> int | None:
    """The HTTP status of a huggingface_hub error, if it has one."""
    return getattr(getattr(e, "response", None), "status_code", None)


def network_error(e: BaseException) -> bool:
    """Connection refused/reset, DNS, timeouts: OSError, or the errors of the HTTP library that
    huggingface_hub uses (requests on 0.x, httpx on 1.x and later)."""
    libraries = {"requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2"}
    return isinstance(e, OSError) or any(c.__module__.split(".")[0] in libraries for c in type(e).__mro__)


# --------------------------------------------------------------------------- staging folder
def _prepare(staging: Path, commit: str) -> None:
    """Keeps what an earlier run of the same commit left; anything else starts again."""
    marker = staging / COMMIT_FILE
    if staging.exists():
        kept = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if kept != commit:
            log.info("The repository changed since the download into %s began; starting again", staging)
            shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    marker.write_text(commit, encoding="utf-8")


def _part_bytes(staging: Path, files: list[RemoteFile]) -> int:
    return sum(_part(staging, f).stat().st_size for f in files if _part(staging, f).is_file())


@contextmanager
def _locked(path: Path, name: str):
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DownloadError(f"{name} is being downloaded by another process right now (lock file "
                            f"{path}); wait for it to finish.") from None
    try:
        yield
    finally:
        lock.release()


def _tidy(lock: Path) -> None:
    """Removes the lock file, and the staging parent when nothing else is in it."""
    for remove in (lock.unlink, lock.parent.rmdir):
        try:
            remove()
        except OSError:
            pass


def _check_space(staging: Path, needed: int, name: str, root: Path) -> None:
    free = shutil.disk_usage(staging).free
    if free < needed:
        raise DownloadError(f"{name} needs {_size(needed)} more on the disk of {root}, which has "
                            f"{_size(free)} free. Free some space and download again.")


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


# --------------------------------------------------------------------------- transfer
class _DownloadProgress:
    """Bytes of the verified files plus those of the file under way, told to the callback."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.total, self.finished, self.current = callback, total, 0, 0

    def report(self) -> None:
        if self.callback is not None:
            self.callback(min(self.finished + self.current, self.total), self.total)


@dataclass
class _Job:
    """One checkpoint's download: where it goes and what it reports to."""
    name: str
    root: Path
    staging: Path
    commit: str
    endpoint: str
    progress: _DownloadProgress
    check_interrupt: Callable[[], None]
    thread: int = field(default_factory=threading.get_ident)    # the caller's

    def manual(self) -> str:
        return manual_command(self.name, self.root)


def _download_staged(job: _Job, files: list[RemoteFile]) -> None:
    """Under the folder lock: fetches what the staging folder lacks, then renames it to
    `<root>/<name>`. A full disk stops it with how much more it needs; the files so far stay."""
    try:
        _fetch_all(job, files)
    except OSError as e:
        if not disk_full(e):
            raise
        done = sum(f.size for f in files if (job.staging / f.path).is_file())
        needed = job.progress.total - done - _part_bytes(job.staging, files)
        raise DownloadError(
            f"The disk of {job.root} is full ({e.strerror or e}): {job.name} needs {_size(needed)} more "
            f"there, {_size(shutil.disk_usage(job.root).free)} are free. What was downloaded is kept in "
            f"{job.staging}; free some space and download again to continue where it stopped.") from None


def _fetch_all(job: _Job, files: list[RemoteFile]) -> None:
    final, staging, progress = job.root / job.name, job.staging, job.progress
    _prepare(staging, job.commit)
    pending = [f for f in files if not (staging / f.path).is_file()]   # the others: verified, same commit
    progress.finished = progress.total - sum(f.size for f in pending)
    progress.current = _part_bytes(staging, pending)
    _check_space(staging, progress.total - progress.finished - progress.current, job.name, job.root)
    log.info("Downloading %s (%s in %d files) into %s", repo_id(job.name), _size(progress.total),
             len(files), final)
    progress.report()
    for f in pending:
        job.check_interrupt()
        _fetch(job, f)
        _verify(job, f)
        os.replace(_part(staging, f), staging / f.path)
        progress.finished += f.size
        progress.current = 0
        progress.report()
    (staging / COMMIT_FILE).unlink()
    try:
        os.replace(staging, final)
    except OSError as e:
        raise DownloadError(f"Downloaded {job.name} into {staging} but could not move it to {final} "
                            f"({e}); move it there by hand.") from None
    log.info("Downloaded %s into %s; every file's hash checked", repo_id(job.name), final)


def _fetch(job: _Job, f: RemoteFile) -> None:
    """Fetches one file into the staging folder, continuing what an earlier attempt left. The
    library retries within an attempt (and waits between its tries); another attempt is made only
    after one that brought new bytes (the link works, but the library gave up on a cut answer)."""
    most, restarted = -1, False
    while True:
        try:
            return _transfer(job, f)
        except Exception as e:
            if disk_full(e) or not (network_error(e) or _status(e)):
                raise
            status = _status(e)
            if status in (401, 403, 404, 410):
                raise DownloadError(f"{job.endpoint} answered HTTP {status} for {f.path} of "
                                    f"{repo_id(job.name)}; download by hand: {job.manual()}") from None
            part = _part(job.staging, f)
            if status == 416 and not restarted:     # a part longer than the file: start it again, once
                part.unlink(missing_ok=True)
                most, restarted = -1, True
            have = part.stat().st_size if part.is_file() else 0
            if have <= most:
                raise DownloadError(
                    f"Download of {job.name} stopped: {first_line(e)} ({f.path}: {_size(have)} of "
                    f"{_size(f.size)}). What was downloaded is kept in {job.staging}; download again to "
                    f"continue where it stopped. Is this computer offline? By hand: {job.manual()}") from None
            most = have
            log.warning("Downloading %s/%s: %s; trying again", job.name, f.path, first_line(e))
            time.sleep(RETRY_WAIT)


def _transfer(job: _Job, f: RemoteFile) -> None:
    """One attempt: the Hub's answer for the file of this commit (where it is: the Hub, its CDN
    or Xet), then its bytes into `<path>.part`, over Xet or continuing the part over HTTP."""
    from urllib.parse import urlsplit

    from huggingface_hub import file_download, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id(job.name), f.path, revision=job.commit, endpoint=job.endpoint)
    headers = build_hf_headers(library_name=LIBRARY)
    meta = get_hf_file_metadata(url, headers=headers)
    part, bar = _part(job.staging, f), _bar_class(job, f)
    part.parent.mkdir(parents=True, exist_ok=True)
    if meta.xet_file_data is not None and file_download.is_xet_available():   # as hf_hub_download decides
        part.unlink(missing_ok=True)      # Xet writes the whole file (its chunk cache keeps what it fetched)
        file_download.xet_get(incomplete_path=part, xet_file_data=meta.xet_file_data, headers=headers,
                              expected_size=f.size, displayed_filename=f.path,
                              **_progress_argument(file_download.xet_get, bar, f.size, 0))
    else:
        if urlsplit(meta.location).netloc != urlsplit(url).netloc:   # the CDN: the token stays on the Hub
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        with open(part, "ab") as out:
            have = out.tell()
            file_download.http_get(meta.location, out, resume_size=have, headers=headers, expected_size=f.size,
                                   displayed_filename=f.path,
                                   **_progress_argument(file_download.http_get, bar, f.size, have))


def _progress_argument(function, bar: type, total: int, initial: int) -> dict:
    """How `function` (http_get or xet_get) takes our progress bar: as `tqdm_class` where it has
    that parameter (2.4 here); the 0.x line only takes a bar made already (`_tqdm_bar`)."""
    if "tqdm_class" in inspect.signature(function).parameters:
        return {"tqdm_class": bar}
    return {"_tqdm_bar": bar(total=total, initial=initial, unit="B")}


def _part(staging: Path, f: RemoteFile) -> Path:
    return staging / (f.path + PART)


def _bar_class(job: _Job, f: RemoteFile) -> type:
    """A tqdm class for huggingface_hub's `tqdm_class`: the bytes it counts go to the job's
    progress, and in the caller's thread each count is also an interrupt check. A Xet transfer
    may open two bars (bytes written, bytes received): the file's progress is the larger count."""
    from tqdm.std import tqdm

    bars: list = []

    class FileBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "disable": True})     # count, never draw
            bars.append(self)
            self.count(0)

        def update(self, n=1):
            self.n += n
            self.count(n)

        def count(self, n) -> None:
            job.progress.current = min(max(b.n for b in bars), f.size)
            job.progress.report()
            if n and threading.get_ident() == job.thread:
                job.check_interrupt()

    return FileBar


def _verify(job: _Job, f: RemoteFile) -> None:
    """Checks a fetched `.part` against the Hub's hash: sha256 of the bytes (LFS files), or git's
    blob id, the sha1 of b"blob <size>\\0" + the bytes. A damaged one is deleted. (Each block
    hashed is also an interrupt check: the one a Xet transfer waits for.)"""
    path = _part(job.staging, f)
    kind, want = ("sha256", f.sha256) if f.sha256 else ("git blob sha1", f.git_sha1)
    size = path.stat().st_size
    if want is None:                    # a small config file listed without a hash
        bad = None if size == f.size else f"{size} bytes"
        kind, want = "size", f"{f.size} bytes"
    else:
        digest = hashlib.sha256() if f.sha256 else hashlib.sha1(b"blob %d\0" % size)
        with open(path, "rb") as data:
            while block := data.read(HASH_BLOCK):
                digest.update(block)
                job.check_interrupt()
        bad = None if digest.hexdigest() == want else digest.hexdigest()
    if bad:
        path.unlink()
        job.progress.current = 0
        job.progress.report()
        raise DownloadError(
            f"{f.path} of {job.name} arrived damaged: its {kind} is {bad} but the Hub lists "
            f"{want}. The damaged file was deleted (the verified files are kept in "
            f"{job.staging}); download again to fetch it anew. If it keeps happening, check the "
            f"connection, the proxy or HF_ENDPOINT, or download by hand: {job.manual()}")


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qwen_tts_core.download",
                                 description="Download released Qwen3-TTS checkpoints from the Hugging "
                                             "Face Hub (hashes checked, resumable). Without names: the list.")
    ap.add_argument("names", nargs="*", metavar="NAME", help="checkpoint names, e.g. Qwen3-TTS-12Hz-1.7B-CustomVoice")
    ap.add_argument("--dir", default=os.path.join("models", "qwen-tts"),
                    help="the models folder to download into (default: models/qwen-tts)")
    args = ap.parse_args(argv)
    if not args.names:
        for name, c in CHECKPOINTS.items():
            there = "  (downloaded)" if is_downloaded(name, args.dir) else ""
            print(f"{name:34s} {c.size:>7s}  {c.what}{there}")
        return 0
    for name in args.names:
        def show(done: int, total: int, name=name) -> None:
            print(f"\r{name}: {_size(done)} of {_size(total)} ({100 * done // max(total, 1)}%)",
                  end="", file=sys.stderr, flush=True)
        try:
            folder = download(name, args.dir, on_progress=show)
        except KeyboardInterrupt:
            print("\nstopped; run the same command again to continue where it stopped", file=sys.stderr)
            return 130
        except QwenTTSError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 2
        print(f"\n{name}: {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
