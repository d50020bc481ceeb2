"""Downloads a released Qwen3-TTS checkpoint from the Hugging Face Hub into `<root>/<name>/`, only
when asked (the ComfyUI loaders' "(download)" entries, or this module's command line):

    python -m qwen_tts_core.download Qwen3-TTS-12Hz-1.7B-CustomVoice --dir models/qwen-tts

huggingface_hub (a transformers dependency) gives the repository's commit and its files with their
sizes and hashes (`HfApi.model_info(files_metadata=True)`), the file URLs, the headers and the
user's token. The bytes come over plain HTTP(S) in the small loop below instead of through
`hf_hub_download`, so that the same things hold on every huggingface_hub version (0.36 under
transformers 4.57, 1.x/2.x under 5.x), with or without hf_xet: progress in bytes, an interrupt check
between 1 MiB chunks, a cut or stopped download continued with an HTTP Range request, and every
file checked against the Hub's hash (sha256 for LFS files, the git blob sha1 for the others).

Files go into `<root>/.downloading/<name>/` (unfinished ones end in `.part`). That folder becomes
`<root>/<name>` in one rename once every file is there and verified, so a half download is never
taken for a model. What a stopped or failed download got is kept and continued next time, unless
the repository has moved to another commit meanwhile (then it starts again).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Callable

from .errors import DownloadError, InputError, QwenTTSError

log = logging.getLogger("qwen_tts_core")

OWNER = "Qwen"                    # the checkpoints are the Hub repositories Qwen/<name>
STAGING = ".downloading"          # <root>/.downloading/<name>/ while a download is under way
COMMIT_FILE = ".commit"           # in the staging folder: the commit its files belong to
CHUNK = 1 << 20                   # bytes read between two interrupt checks
REPORT_EVERY = 16 << 20           # bytes between two progress reports (and at each file's end)
RETRIES = 5                       # failed attempts in a row (no new bytes) before giving up
RETRY_WAIT = 1.0                  # seconds between attempts
TIMEOUT = 30.0                    # seconds of silence from the server before an attempt fails


@dataclass(frozen=True)
class Checkpoint:
    what: str          # what it is for
    size: str          # the repository's size as the Hub shows it


CHECKPOINTS = {
    "Qwen3-TTS-12Hz-1.7B-CustomVoice": Checkpoint("built-in speakers with style instructions", "4.5 GB"),
    "Qwen3-TTS-12Hz-0.6B-CustomVoice": Checkpoint("built-in speakers, smaller", "2.5 GB"),
    "Qwen3-TTS-12Hz-1.7B-VoiceDesign": Checkpoint("a voice from a description", "4.5 GB"),
    "Qwen3-TTS-12Hz-1.7B-Base": Checkpoint("voice cloning", "4.5 GB"),
    "Qwen3-TTS-12Hz-0.6B-Base": Checkpoint("voice cloning, smaller", "2.5 GB"),
    "Qwen3-TTS-Tokenizer-12Hz": Checkpoint("the speech tokenizer alone", "0.7 GB"),
}
TOKENIZER = "Qwen3-TTS-Tokenizer-12Hz"

Progress = Callable[[int, int], None]      # (bytes done, bytes in all)


def manual_command(name: str, root) -> str:
    """The shell command that downloads `name` by hand into the same folder."""
    return f'hf download {OWNER}/{name} --local-dir "{Path(root) / name}"'


@dataclass(frozen=True)
class RemoteFile:
    path: str                  # relative to the repository root, "/"-separated
    size: int
    sha256: str | None         # LFS files
    git_sha1: str | None       # other files: the git blob id


def download(name: str, root, *, on_progress: Progress | None = None,
             check_interrupt: Callable[[], None] | None = None, endpoint: str | None = None) -> Path:
    """Downloads checkpoint `name` into `<root>/<name>` and returns that folder (at once, without
    any network access, if it already holds a config.json). `on_progress(done, total)` gets bytes;
    `check_interrupt()` is called between chunks and may raise to stop: what was downloaded is
    kept and the next call continues from there. `endpoint`: default $HF_ENDPOINT or the Hub."""
    if name not in CHECKPOINTS:
        raise InputError(f"Unknown checkpoint {name!r}; downloadable: {', '.join(CHECKPOINTS)}.")
    root = Path(root)
    final = root / name
    if (final / "config.json").is_file():
        return final
    if final.exists():
        raise DownloadError(f"{final} exists but holds no config.json (a download by hand that did not "
                            f"finish?). Finish it with: {manual_command(name, root)}  or move the folder "
                            "away and download again.")
    endpoint = hub_endpoint(endpoint)
    if _offline():
        raise DownloadError(_offline_message(name, root, "HF_HUB_OFFLINE is set"))
    commit, files = _list_files(name, root, endpoint)
    check_interrupt = check_interrupt or (lambda: None)
    staging = root / STAGING / name
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot write to {root} ({e}); make it writable or download by hand: "
                            f"{manual_command(name, root)}") from None
    lock = staging.parent / f"{name}.lock"
    with _locked(lock, name):
        _prepare(staging, commit)
        progress = _Progress(on_progress, sum(f.size for f in files))
        pending = []
        for f in files:
            if (staging / f.path).is_file():          # verified by an earlier run, same commit
                progress.add(f.size)
            else:
                pending.append(f)
                progress.add(_part_size(staging, f))
        _check_space(staging, progress.total - progress.done, name, root)
        log.info("Downloading %s/%s (%s in %d files) into %s", OWNER, name, _size(progress.total),
                 len(files), final)
        progress.report()
        job = _Job(name, root, staging, commit, endpoint, progress, check_interrupt, *_http())
        for f in pending:
            _fetch(job, f)
        (staging / COMMIT_FILE).unlink()
        try:
            os.replace(staging, final)
        except OSError as e:
            raise DownloadError(f"Downloaded {name} into {staging} but could not move it to {final} "
                                f"({e}); move it there by hand.") from None
    _tidy(lock)
    log.info("Downloaded %s/%s into %s; every file's hash checked", OWNER, name, final)
    return final


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub's address: `endpoint`, else $HF_ENDPOINT (read now, so a mirror set after import
    counts), else huggingface_hub's default."""
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


def _offline() -> bool:
    from huggingface_hub import constants

    return (os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
            or bool(constants.HF_HUB_OFFLINE))


def _offline_message(name: str, root: Path, reason: str) -> str:
    return (f"Cannot download {name}: {reason}. Is this computer offline, or does it need a proxy "
            f"(HTTPS_PROXY) or a Hub mirror (HF_ENDPOINT)? Nothing was downloaded. On a computer with "
            f"internet run:  {manual_command(name, root)}  and copy the folder to {root / name} "
            f"(config.json, model.safetensors, the text tokenizer files and speech_tokenizer/).")


# --------------------------------------------------------------------------- the file list
def _list_files(name: str, root: Path, endpoint: str) -> tuple[str, list[RemoteFile]]:
    """(commit, files) of the repository's main branch."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    repo = f"{OWNER}/{name}"
    try:
        info = HfApi(endpoint=endpoint, library_name="qwen-tts-comfyui").model_info(
            repo, files_metadata=True, timeout=TIMEOUT)
    except RepositoryNotFoundError:
        raise DownloadError(f"{endpoint} has no repository {repo} (or wants a login: hf auth login). "
                            f"If HF_ENDPOINT points to a mirror, it lacks this model; download by hand: "
                            f"{manual_command(name, root)}") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "an error")
        raise DownloadError(f"{endpoint} answered HTTP {status} for {repo}; try again later or "
                            f"download by hand: {manual_command(name, root)}") from None
    except Exception as e:
        if not _network_error(e):
            raise
        raise DownloadError(_offline_message(name, root, f"{endpoint} cannot be reached ({e})")) from None
    commit = info.sha or ""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise DownloadError(f"{endpoint} gave no commit id for {repo} (got {commit!r}); is HF_ENDPOINT a Hub?")
    files = []
    for s in info.siblings or []:
        lfs = s.lfs
        sha256 = (lfs["sha256"] if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        size = (lfs["size"] if isinstance(lfs, dict) else getattr(lfs, "size", None)) if lfs else s.size
        if size is None:
            raise DownloadError(f"{endpoint} listed {repo} without file sizes; is HF_ENDPOINT a Hub?")
        files.append(RemoteFile(_safe_path(s.rfilename, endpoint), int(size), sha256,
                                None if lfs else s.blob_id))
    if not any(f.path == "config.json" for f in files):
        raise DownloadError(f"{endpoint}: {repo} has no config.json; nothing downloaded.")
    return commit, files


def _safe_path(path: str, endpoint: str) -> str:
    parts = PurePosixPath(path).parts
    if (not parts or path.startswith("/") or "\\" in path or ":" in path
            or any(p in (".", "..") for p in parts)):
        raise DownloadError(f"{endpoint} listed a file outside the model folder ({path!r}); nothing "
                            "downloaded. Check HF_ENDPOINT.")
    return path


def _network_error(e: Exception) -> bool:
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


def _part(staging: Path, f: RemoteFile) -> Path:
    return staging / (f.path + ".part")


def _part_size(staging: Path, f: RemoteFile) -> int:
    part = _part(staging, f)
    return min(part.stat().st_size, f.size) if part.is_file() else 0


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


# --------------------------------------------------------------------------- transfer
class _Progress:
    def __init__(self, callback: Progress | None, total: int):
        self.callback, self.total, self.done, self.reported = callback, total, 0, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.done - self.reported >= REPORT_EVERY or n < 0:
            self.report()

    def report(self) -> None:
        self.reported = self.done
        if self.callback is not None:
            self.callback(self.done, self.total)


class _Digest:
    """sha256 of the bytes (LFS files), or git's blob id: sha1 of b"blob <size>\\0" + bytes."""

    def __init__(self, f: RemoteFile):
        self.file = f
        self.kind, self.want = (("sha256", f.sha256) if f.sha256 else
                                ("git blob sha1", f.git_sha1) if f.git_sha1 else (None, None))
        self.reset()

    def reset(self) -> None:
        self.h = (hashlib.sha256() if self.file.sha256 else
                  hashlib.sha1(b"blob %d\0" % self.file.size) if self.file.git_sha1 else None)

    def update(self, data: bytes) -> None:
        if self.h is not None:
            self.h.update(data)

    def mismatch(self) -> str | None:
        """None when the file is right (or the Hub gave no hash for it), else what it got."""
        if self.h is None:
            return None
        got = self.h.hexdigest()
        return None if got == self.want else got


class _Retry(Exception):
    """This attempt ended early; try again from where it stopped."""


@dataclass
class _Job:
    """One checkpoint's download: where it goes, what it reports to, how it talks HTTP."""
    name: str
    root: Path
    staging: Path
    commit: str
    endpoint: str
    progress: _Progress
    check_interrupt: Callable[[], None]
    opener: urllib.request.OpenerDirector
    headers: dict
    auth: str | None

    def url(self, f: RemoteFile) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(f"{OWNER}/{self.name}", f.path, revision=self.commit, endpoint=self.endpoint)

    def request(self, f: RemoteFile, start: int) -> urllib.request.Request:
        request = urllib.request.Request(self.url(f), headers=dict(self.headers, **(
            {"range": f"bytes={start}-"} if start else {})))
        if self.auth:
            request.add_unredirected_header("Authorization", self.auth)
        return request

    def manual(self) -> str:
        return manual_command(self.name, self.root)


@lru_cache(maxsize=1)
def _opener() -> urllib.request.OpenerDirector:
    """urllib with the system's certificates (and certifi's where installed), proxies from the
    environment, redirects followed."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))


def _http():
    """(opener, headers, authorization): the token only goes to the Hub, never to the CDN that
    the Hub redirects file downloads to (urllib drops unredirected headers on redirects)."""
    from huggingface_hub.utils import build_hf_headers

    headers = {k.lower(): v for k, v in build_hf_headers(library_name="qwen-tts-comfyui").items()}
    auth = headers.pop("authorization", None)
    headers["accept-encoding"] = "identity"
    return _opener(), headers, auth


def _fetch(job: _Job, f: RemoteFile) -> None:
    """Downloads one file into its .part (continuing what is there), checks its hash, and
    renames it to its final name."""
    target, part, progress = job.staging / f.path, _part(job.staging, f), job.progress
    part.parent.mkdir(parents=True, exist_ok=True)
    digest = _Digest(f)
    have = part.stat().st_size if part.is_file() else 0
    if have > f.size:                                  # not from this file: start it again
        part.unlink()
        progress.add(-f.size)
        have = 0

    def restart(out) -> int:
        out.truncate(0)
        digest.reset()
        progress.add(-have)
        return 0

    with open(part, "ab") as out:
        if have:
            _hash_existing(part, have, digest, job.check_interrupt)
        failures = 0
        while have < f.size:
            job.check_interrupt()
            try:
                with job.opener.open(job.request(f, have), timeout=TIMEOUT) as response:
                    resumed = response.status == 206 and response.headers.get(
                        "Content-Range", "").startswith(f"bytes {have}-")
                    if have and not resumed:                # the Range was ignored: start over
                        have = restart(out)
                    while chunk := response.read(CHUNK):
                        if have + len(chunk) > f.size:
                            restart(out)
                            raise DownloadError(f"{job.url(f)} sent more than the {f.size} bytes the "
                                                f"Hub lists; nothing of it was kept. Check HF_ENDPOINT "
                                                f"or download by hand: {job.manual()}")
                        out.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        progress.add(len(chunk))
                        failures = 0
                        job.check_interrupt()
                if have < f.size:
                    raise _Retry(f"the connection closed after {have} of {f.size} bytes")
            except urllib.error.HTTPError as e:
                if e.code in (401, 403, 404, 410):
                    raise DownloadError(f"{job.url(f)} answered HTTP {e.code} ({e.reason}); download "
                                        f"by hand: {job.manual()}") from None
                if e.code == 416:                           # range beyond the file: start over
                    have = restart(out)
                failures = _retry(job, failures, f"HTTP {e.code}", f, have)
            except (_Retry, OSError, http.client.HTTPException) as e:
                out.flush()
                failures = _retry(job, failures, str(e) or type(e).__name__, f, have)
    bad = digest.mismatch()
    if bad:
        part.unlink()
        progress.add(-f.size)
        raise DownloadError(
            f"{f.path} of {job.name} arrived damaged: its {digest.kind} is {bad} but the Hub lists "
            f"{digest.want}. The damaged file was deleted (the verified files are kept in "
            f"{job.staging}); download again to fetch it anew. If it keeps happening, check the "
            f"connection, the proxy or HF_ENDPOINT, or download by hand: {job.manual()}")
    os.replace(part, target)
    progress.report()


def _hash_existing(part: Path, size: int, digest: _Digest, check_interrupt) -> None:
    """Feeds the bytes a stopped download left to the hash, so the check covers the whole file."""
    with open(part, "rb") as kept:
        while block := kept.read(min(16 * CHUNK, size)):
            digest.update(block)
            size -= len(block)
            check_interrupt()


def _retry(job: _Job, failures: int, why: str, f: RemoteFile, have: int) -> int:
    failures += 1
    if failures > RETRIES:
        raise DownloadError(
            f"Download of {job.name} stopped: {why} ({f.path}: {_size(have)} of {_size(f.size)}). What "
            f"was downloaded is kept in {job.staging}; download again to continue where it stopped. "
            f"Is this computer offline? By hand: {job.manual()}")
    log.warning("Downloading %s/%s: %s; trying again (%d/%d)", job.name, f.path, why, failures, RETRIES)
    time.sleep(RETRY_WAIT)
    return failures


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
            there = "  (downloaded)" if (Path(args.dir) / name / "config.json").is_file() else ""
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
