"""Downloads of released checkpoints (qwen_tts_core.download) against a local Hub stand-in
(tests/hub_server.py, set through HF_ENDPOINT): the whole tiny checkpoint arrives byte for byte,
a cut connection and a stopped download continue where they stopped, a damaged file is refused
and never shows up as a model, a server that is down or HF_HUB_OFFLINE gives the manual command.
No test here reaches the internet. The `hub` fixture (tests/conftest.py) has huggingface_hub
read CHUNK bytes at a time (10 MiB otherwise), so that a stop or a cut can fall inside a file."""
import os
import subprocess
import sys
import threading
from itertools import accumulate
from pathlib import Path

import pytest

from conftest import HUB_CHUNK as CHUNK
from conftest import MODELS, ROOT
from hub_server import closed_port_endpoint
from qwen_tts_core import download as dl
from qwen_tts_core.errors import DownloadError, InputError

pytestmark = pytest.mark.core

CUSTOM, TOKENIZER = "Qwen3-TTS-12Hz-1.7B-CustomVoice", "Qwen3-TTS-Tokenizer-12Hz"
SOURCE = MODELS / "Tiny-CustomVoice"
WEIGHTS = "model.safetensors"                      # 5.8 MB, an LFS file (sha256 checked)
VOCAB = "vocab.json"                               # 2.8 MB, a plain git file (blob sha1 checked)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fixture_size() -> int:
    return sum(len(b) for b in files_of(SOURCE).values())


class Stop(Exception):
    """What an interrupt check raises (ComfyUI raises its InterruptProcessingException)."""


def stop_once_a_file_is_partly_there(root: Path):
    """An interrupt check that stops the download at its first check after some bytes of a file
    (not all of it) arrived."""
    sizes = {path: len(data) for path, data in files_of(SOURCE).items()}

    def check():
        parts = staged(root).rglob("*.part")
        if any(0 < p.stat().st_size < sizes[p.relative_to(staged(root)).as_posix()[:-5]] for p in parts):
            raise Stop()
    return check


def staged(root: Path, name: str = CUSTOM) -> Path:
    return root / dl.STAGING / name


def resumed(hub) -> list[str]:
    """The Range headers of the file requests, to the Hub or to the CDN it sends LFS files to."""
    return [r[2] for r in hub.log if r[0] == "GET" and ("/resolve/" in r[1] or r[1].startswith("/cdn/")) and r[2]]


# ----------------------------------------------------------------------------- success
def test_downloads_the_checkpoint_byte_for_byte_with_progress(hub, tmp_path):
    seen = []
    folder = dl.download(CUSTOM, tmp_path, on_progress=lambda done, total: seen.append((done, total)))
    assert folder == tmp_path / CUSTOM
    assert files_of(folder) == files_of(SOURCE)                 # every file, subfolder included
    total = fixture_size()
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))    # bytes only go up
    ends = set(accumulate(len(data) for data in files_of(SOURCE).values()))
    assert any(done not in ends for done, _ in seen)            # the bar moves inside a file too
    assert sorted(os.listdir(tmp_path)) == [CUSTOM]             # no staging folder, no lock left
    # the token stays on the Hub: LFS bytes came from the CDN host, without a Range (fresh start)
    cdn = [r for r in hub.log if r[1].startswith("/cdn/")]
    assert cdn and all(r[3].startswith("localhost") and r[2] is None for r in cdn)


def test_the_token_goes_to_the_hub_only_never_to_the_cdn(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    dl.download(TOKENIZER, tmp_path)
    hub_side = [r for r in hub.log if not r[1].startswith("/cdn/")]
    cdn = [r for r in hub.log if r[1].startswith("/cdn/")]
    assert cdn and all(r[4] is None for r in cdn)
    assert hub_side and all(r[4] == "Bearer hf_test_token" for r in hub_side)


def test_a_folder_that_is_there_is_returned_without_asking_the_network(tmp_path, monkeypatch):
    (tmp_path / CUSTOM).mkdir()
    (tmp_path / CUSTOM / "config.json").write_text("{}")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_endpoint())
    assert dl.download(CUSTOM, tmp_path) == tmp_path / CUSTOM


def test_a_folder_without_config_is_not_overwritten(hub, tmp_path):
    (tmp_path / CUSTOM).mkdir()
    (tmp_path / CUSTOM / "model.safetensors").write_bytes(b"half of it")
    with pytest.raises(DownloadError, match="holds no config.json.*hf download Qwen/"):
        dl.download(CUSTOM, tmp_path)
    assert (tmp_path / CUSTOM / "model.safetensors").read_bytes() == b"half of it"
    assert hub.log == []


def test_a_download_another_process_finished_meanwhile_is_not_fetched_again(hub, tmp_path, monkeypatch):
    """Two downloads of one checkpoint start together: the second lists the files while the
    first one finishes and lets go of the lock. Under the lock the second sees the finished
    folder and returns it, instead of fetching everything again into a new staging folder
    (which could then not be renamed onto the finished one)."""
    real_list = dl.list_files

    def list_while_another_finishes(name, root, endpoint):
        listing = real_list(name, root, endpoint)
        monkeypatch.setattr(dl, "list_files", real_list)
        dl.download(name, root)                                  # the other process, start to end
        hub.log.clear()
        return listing

    monkeypatch.setattr(dl, "list_files", list_while_another_finishes)
    assert dl.download(CUSTOM, tmp_path) == tmp_path / CUSTOM
    assert files_of(tmp_path / CUSTOM) == files_of(SOURCE)
    assert [r for r in hub.log if "/resolve/" in r[1] or r[1].startswith("/cdn/")] == []
    assert sorted(os.listdir(tmp_path)) == [CUSTOM]              # no staging folder, no lock left


def test_an_entry_can_name_another_repository_and_some_of_its_files(hub, tmp_path, monkeypatch):
    """A table entry for weights that are not a Qwen checkpoint (e.g. a watermark model): its own
    repository, only the files it names; the first of them says the folder is complete."""
    monkeypatch.setitem(dl.CHECKPOINTS, "Some-Weights", dl.Checkpoint(
        "a test entry", "2 MB", repo=f"Qwen/{TOKENIZER}", files=("model.safetensors", "config.json")))
    assert dl.manual_command("Some-Weights", tmp_path) == (
        f'hf download Qwen/{TOKENIZER} model.safetensors config.json --local-dir "{tmp_path / "Some-Weights"}"')
    assert not dl.is_downloaded("Some-Weights", tmp_path)
    folder = dl.download("Some-Weights", tmp_path)
    source = files_of(MODELS / "Tiny-Tokenizer-12Hz")
    assert files_of(folder) == {p: source[p] for p in ("config.json", "model.safetensors")}
    assert dl.is_downloaded("Some-Weights", tmp_path)
    (folder / "config.json").unlink()
    assert dl.is_downloaded("Some-Weights", tmp_path)                 # model.safetensors says so
    hub.log.clear()
    assert dl.download("Some-Weights", tmp_path) == folder and hub.log == []


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(InputError, match="Unknown checkpoint 'Qwen3-TTS-9B'.*Qwen3-TTS-12Hz-1.7B-Base"):
        dl.download("Qwen3-TTS-9B", tmp_path)


# ----------------------------------------------------------------------------- resume
def test_a_cut_connection_continues_where_it_stopped(hub, tmp_path):
    """The first answer breaks off half way through the second chunk: the next request asks for
    what follows the whole chunk that was written; only the half chunk in hand is fetched twice."""
    size = len((SOURCE / WEIGHTS).read_bytes())
    hub.cut[WEIGHTS] = CHUNK + CHUNK // 2                        # the first answer breaks off
    folder = dl.download(CUSTOM, tmp_path)
    assert files_of(folder) == files_of(SOURCE)
    gets = [r for r in hub.log if r[0] == "GET" and r[1].startswith("/cdn/") and
            r[1].endswith(hub.repos[f"Qwen/{CUSTOM}"].files[WEIGHTS].sha256)]
    assert [r[2] for r in gets] == [None, f"bytes={CHUNK}-"]
    assert hub.bytes_served(WEIGHTS) == size + CHUNK // 2


def test_a_stopped_download_keeps_its_bytes_and_the_next_one_continues(hub, tmp_path):
    with pytest.raises(Stop):
        dl.download(CUSTOM, tmp_path, check_interrupt=stop_once_a_file_is_partly_there(tmp_path))
    assert not (tmp_path / CUSTOM).exists()                      # never a half model
    parts = {p.relative_to(staged(tmp_path)).as_posix(): p.stat().st_size
             for p in staged(tmp_path).rglob("*.part")}
    assert len(parts) == 1 and list(parts.values())[0] > 0
    (part, kept), = parts.items()
    path = part[: -len(".part")]
    hub.log.clear()
    seen = []
    folder = dl.download(CUSTOM, tmp_path, on_progress=lambda done, total: seen.append(done))
    assert files_of(folder) == files_of(SOURCE)
    assert resumed(hub) == [f"bytes={kept}-"]                    # continued, not started over
    assert seen[0] >= kept                                        # the kept bytes count as done
    asked = [(r[0], r[1].split("/resolve/")[-1].split("/", 1)[-1]) for r in hub.log if "/resolve/" in r[1]]
    assert asked[0] == ("HEAD", path)                             # that file first, then the ones not begun
    assert [r[2] for r in hub.log if r[0] == "GET" and r[2]] == [f"bytes={kept}-"]   # only its rest


def test_server_gone_mid_file_keeps_the_part_and_a_later_run_finishes(hub, tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "sleep", lambda seconds: None)    # huggingface_hub's waits between its tries
    hub.cut[WEIGHTS] = 2 * CHUNK + 1000
    hub.down_after_cut = True                                    # the connection drops, then the server
    with pytest.raises(DownloadError) as e:
        dl.download(CUSTOM, tmp_path)
    msg = str(e.value)
    assert "Download of Qwen3-TTS-12Hz-1.7B-CustomVoice stopped" in msg and "is kept in" in msg
    assert "download again to continue where it stopped" in msg and f"hf download Qwen/{CUSTOM}" in msg
    assert (staged(tmp_path) / (WEIGHTS + ".part")).stat().st_size == 2 * CHUNK   # the whole chunks
    assert not (tmp_path / CUSTOM).exists()
    hub.down, hub.down_after_cut = False, False                  # back up
    hub.log.clear()
    folder = dl.download(CUSTOM, tmp_path)
    assert resumed(hub) == [f"bytes={2 * CHUNK}-"]
    assert files_of(folder) == files_of(SOURCE)


def test_a_new_commit_starts_the_staged_download_again(hub, tmp_path):
    with pytest.raises(Stop):
        dl.download(CUSTOM, tmp_path, check_interrupt=stop_once_a_file_is_partly_there(tmp_path))
    repo = hub.repos[f"Qwen/{CUSTOM}"]
    old_commit, repo.commit = repo.commit, "f" * 40
    hub.log.clear()
    folder = dl.download(CUSTOM, tmp_path)
    assert files_of(folder) == files_of(SOURCE)
    assert not any(r[2] for r in hub.log)                        # nothing continued from the old commit
    assert all(old_commit not in r[1] for r in hub.log)


def test_progress_from_another_thread_shows_and_cancel_waits_for_the_files_end(hub, tmp_path, monkeypatch):
    """hf_xet reports a file's bytes from a thread of its own and drops what the hook raises there
    (qwen_tts_core/download.py says why this matters). Played here by running huggingface_hub's
    http_get in another thread: its progress still reaches on_progress; the interrupt check runs in
    the caller's thread only (ComfyUI's check clears its flag when it raises: raised where nobody
    catches it, the Cancel would be lost); a Cancel pressed during such a file stops the download
    when the file is there, and that file is kept and not fetched again."""
    from huggingface_hub import file_download

    real_http_get = file_download.http_get

    def in_another_thread(*args, **kwargs):
        failed = []

        def run():
            try:
                real_http_get(*args, **kwargs)
            except Exception as e:
                failed.append(e)
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        if failed:
            raise failed[0]

    monkeypatch.setattr(file_download, "http_get", in_another_thread)
    caller, checked_in, reported_in, cancel = threading.get_ident(), set(), set(), []

    def on_progress(done, total):
        reported_in.add(threading.get_ident())
        if done > 2_500_000:                                     # inside model.safetensors
            cancel.append(True)

    def check():
        checked_in.add(threading.get_ident())
        if cancel:
            raise Stop()

    with pytest.raises(Stop):
        dl.download(CUSTOM, tmp_path, on_progress=on_progress, check_interrupt=check)
    assert checked_in == {caller} and len(reported_in) > 1
    assert (staged(tmp_path) / (WEIGHTS + ".part")).read_bytes() == (SOURCE / WEIGHTS).read_bytes()
    monkeypatch.setattr(file_download, "http_get", real_http_get)
    hub.sent.clear()
    assert files_of(dl.download(CUSTOM, tmp_path)) == files_of(SOURCE)
    assert hub.bytes_served(WEIGHTS) == 0                         # the whole file was kept


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("path, kind", [(WEIGHTS, "sha256"), (VOCAB, "git blob sha1")])
def test_a_damaged_file_is_refused_and_nothing_is_listed(hub, tmp_path, path, kind):
    hub.corrupt.add(path)
    with pytest.raises(DownloadError) as e:
        dl.download(CUSTOM, tmp_path)
    msg = str(e.value)
    assert f"{path} of {CUSTOM} arrived damaged: its {kind}" in msg and "download again" in msg
    assert not (tmp_path / CUSTOM).exists()
    assert not (staged(tmp_path) / path).exists() and not (staged(tmp_path) / (path + ".part")).exists()
    hub.corrupt.clear()                                          # the next try gets it right
    assert files_of(dl.download(CUSTOM, tmp_path)) == files_of(SOURCE)


def test_a_listing_with_paths_outside_the_folder_is_refused(hub, tmp_path):
    hub.extra_siblings.append({"rfilename": "../evil.py", "size": 4, "blobId": "0" * 40})
    with pytest.raises(DownloadError, match="outside the model folder.*'../evil.py'"):
        dl.download(CUSTOM, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_not_enough_disk_space(hub, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(DownloadError, match=r"needs 12\.4 MB more on the disk of .* 0\.0 MB free"):
        dl.download(CUSTOM, tmp_path)
    assert not (tmp_path / CUSTOM).exists()


@pytest.mark.parametrize("path", [WEIGHTS, VOCAB])
def test_a_file_listed_without_a_hash_is_refused(hub, tmp_path, path):
    """A file whose damage could not be seen (no sha256, no git blob id: a poor mirror) is
    refused before anything is fetched; a 2.8 MB vocab.json counts, only small config files don't."""
    hub.no_hash.add(path)
    with pytest.raises(DownloadError, match=rf"lists {path} of Qwen/{CUSTOM} \(\d+ bytes\) without a hash.*"
                                            rf"nothing downloaded.*hf download Qwen/{CUSTOM}"):
        dl.download(CUSTOM, tmp_path)
    assert list(tmp_path.iterdir()) == [] and hub.requests(contains="/resolve/") == []


def test_a_small_config_file_listed_without_a_hash_is_taken(hub, tmp_path):
    hub.no_hash.update({"config.json", "speech_tokenizer/preprocessor_config.json"})
    assert files_of(dl.download(CUSTOM, tmp_path)) == files_of(SOURCE)


def test_a_full_disk_says_how_much_is_needed_and_keeps_what_was_written(hub, tmp_path, monkeypatch):
    """The disk fills up in the middle of model.safetensors, in the middle of a chunk: the error
    says how much more space the checkpoint needs and where; nothing lies outside .downloading/,
    the .part holds what was written (a true beginning of the file), and once there is space again
    the next download continues from there and gets every byte right. The disk fills in the file
    object that huggingface_hub's http_get writes to (on both huggingface_hub lines)."""
    import errno

    from huggingface_hub import file_download

    real_http_get, written = file_download.http_get, {}

    class FillingDisk:
        def __init__(self, out):
            self.out = out

        def write(self, data):
            if sum(written.values()) + len(data) > 3_000_000:
                self.out.write(data[: len(data) // 2])
                self.out.flush()
                written[self.out.name] = written.get(self.out.name, 0) + len(data) // 2
                raise OSError(errno.ENOSPC, "No space left on device")
            written[self.out.name] = written.get(self.out.name, 0) + len(data)
            return self.out.write(data)

        def __getattr__(self, name):
            return getattr(self.out, name)

    monkeypatch.setattr(file_download, "http_get",
                        lambda url, out, *args, **kwargs: real_http_get(url, FillingDisk(out), *args, **kwargs))
    with pytest.raises(DownloadError) as e:
        dl.download(CUSTOM, tmp_path)
    needed = fixture_size() - sum(written.values())
    assert str(e.value).startswith(f"The disk of {tmp_path} is full (No space left on device): {CUSTOM} needs "
                                   f"{needed / 1e6:.1f} MB more there")
    assert f"kept in {staged(tmp_path)}; free some space and download again" in str(e.value)
    assert os.listdir(tmp_path) == [dl.STAGING]
    part = staged(tmp_path) / (WEIGHTS + ".part")
    assert part.stat().st_size == written[str(part)] > CHUNK
    assert part.read_bytes() == (SOURCE / WEIGHTS).read_bytes()[: written[str(part)]]
    monkeypatch.setattr(file_download, "http_get", real_http_get)
    hub.log.clear()
    assert files_of(dl.download(CUSTOM, tmp_path)) == files_of(SOURCE)
    assert resumed(hub) == [f"bytes={written[str(part)]}-"]


# ----------------------------------------------------------------------------- offline
def test_server_down_says_offline_and_gives_the_manual_command(tmp_path, monkeypatch):
    endpoint = closed_port_endpoint()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DownloadError) as e:
        dl.download(CUSTOM, tmp_path)
    msg = str(e.value)
    assert f"{endpoint} cannot be reached" in msg and "offline" in msg and "Nothing was downloaded" in msg
    assert f'hf download Qwen/{CUSTOM} --local-dir "{tmp_path / CUSTOM}"' in msg
    assert list(tmp_path.iterdir()) == []


def test_hf_hub_offline_asks_nothing(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set.*hf download Qwen/"):
        dl.download(CUSTOM, tmp_path)
    assert hub.log == [] and list(tmp_path.iterdir()) == []


def test_a_mirror_without_the_repository(hub, tmp_path):
    with pytest.raises(DownloadError, match="has no repository Qwen/Qwen3-TTS-12Hz-0.6B-Base"):
        dl.download("Qwen3-TTS-12Hz-0.6B-Base", tmp_path)


# ----------------------------------------------------------------------------- the stand-in itself
def test_the_stand_in_speaks_the_hub_protocol_huggingface_hub_uses(hub, tmp_path):
    """snapshot_download (what `hf download` runs) of this huggingface_hub version gets the same
    bytes from the stand-in: HEAD/GET on resolve, the CDN redirect, X-Repo-Commit, ETag,
    X-Linked-Etag/X-Linked-Size as the Hub sends them. So the tests above talk to a faithful Hub."""
    from huggingface_hub import snapshot_download

    out = snapshot_download(f"Qwen/{CUSTOM}", local_dir=tmp_path / "hf", endpoint=hub.endpoint)
    got = {k: v for k, v in files_of(Path(out)).items() if not k.startswith(".cache/")}
    assert got == files_of(SOURCE)
    assert any(r[0] == "HEAD" and "/resolve/" in r[1] for r in hub.log)


# ----------------------------------------------------------------------------- command line
def test_command_line_downloads_without_hf_xet(hub, tmp_path):
    """`python -m qwen_tts_core.download NAME --dir DIR` with HF_ENDPOINT set before
    huggingface_hub is imported, and hf_xet made unimportable."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "hf_xet.py").write_text("raise ImportError('hf_xet is not installed here')\n")
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint,
               PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-c", "import hf_xet"]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode != 0
    r = subprocess.run([sys.executable, "-m", "qwen_tts_core.download", TOKENIZER, "--dir", str(tmp_path / "m")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "m" / TOKENIZER) == files_of(MODELS / "Tiny-Tokenizer-12Hz")
    assert "(100%)" in r.stderr


def test_command_line_lists_the_checkpoints(tmp_path, capsys):
    (tmp_path / TOKENIZER).mkdir()
    (tmp_path / TOKENIZER / "config.json").write_text("{}")
    assert dl.main(["--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(dl.CHECKPOINTS)
    assert [line for line in lines if "(downloaded)" in line] == [
        f"{TOKENIZER:34s}  0.7 GB  the speech tokenizer alone  (downloaded)"]


def test_command_line_offline_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_endpoint())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert dl.main([CUSTOM, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and f"hf download Qwen/{CUSTOM}" in err
