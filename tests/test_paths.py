"""The path policy (qwen_tts_core.paths) and the dataset scan under it: a name leads to a file
inside the allowed folders or is refused with one message, whatever lies outside; Windows-style
names are judged on Linux as Windows would read them; QWEN_TTS_ALLOW_ANY_PATH=1 and roots None
(the command line) read anywhere."""
import json
import ntpath
import os
import posixpath
import random
from pathlib import Path, PureWindowsPath

import pytest

from conftest import AUDIO
from qwen_tts_core.audio import read_wav, write_wav
from qwen_tts_core.errors import InputError, OutsideInputError
from qwen_tts_core.finetune import dataset as dataset_module
from qwen_tts_core.finetune.dataset import scan
from qwen_tts_core.paths import ALLOW_ANY_PATH, confine, is_inside, leads_out_by_name, outside_message, resolve

pytestmark = pytest.mark.core
TEXT = "The quick brown fox jumps."

POSIX_OUT = ["/etc", "/etc/passwd", "//etc", "..", "../x", "a/../../x", "a/..", "./../x", "~", "~/x", "~root/x",
             "file:///etc/passwd", "file:/etc/passwd", "FILE://localhost/etc", "http://example.com/a.wav",
             "a\x00b", "\x00"]
WINDOWS_OUT = ["C:\\Windows", "C:/Windows", "c:\\", "C:", "C:foo", "C:..\\x", "\\\\server\\share\\clips",
               "//server/share/clips", "\\\\?\\C:\\x", "\\\\.\\C:\\x", "\\\\?\\UNC\\server\\share\\x",
               "\\Windows", "..\\..\\x", "a\\..\\..\\x", "a\\.."]
# Windows drops trailing dots and spaces from a name, so these may stand for "..": refused too
DOTS = ["...", ".. ", ". .", "a\\... \\b", "a/.. /b"]
INSIDE = ["my_dataset", "my_dataset/", "my dataset", "sub/clips", "sub\\clips", "./my_dataset", "a/./b",
          "clip.wav", ".hidden", "a..b", "...wav", "x~", "data~1", "C", "Cfoo", "X", "take 2/XX"]


@pytest.fixture
def tree(tmp_path):
    """tmp/input (the allowed root, with my_dataset/) beside tmp/outside (with a secret file)."""
    root, outside = tmp_path / "input", tmp_path / "outside"
    (root / "my_dataset").mkdir(parents=True)
    outside.mkdir()
    (outside / "SECRET_notes.txt").write_text("not yours")
    return root, outside


@pytest.mark.parametrize("name", POSIX_OUT + WINDOWS_OUT + DOTS)
def test_names_that_lead_out_are_refused_before_the_disk_is_asked(name, tree, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(os.path, "realpath", lambda *a, **k: pytest.fail("the disk was asked"))
    with pytest.raises(OutsideInputError) as e:
        resolve(name, [root], what="the dataset folder")
    assert str(e.value) == outside_message("the dataset folder", [root])
    assert leads_out_by_name(name)


@pytest.mark.parametrize("name", INSIDE)
def test_names_inside_resolve_to_that_file(name, tree):
    root, _ = tree
    assert resolve(name, [root]) == root / name
    assert not leads_out_by_name(name)


@pytest.mark.parametrize("name", WINDOWS_OUT)
def test_windows_names_are_judged_as_windows_reads_them(name):
    """Each refused Windows name has a drive, a root or a '..' for Windows itself (ntpath), and
    joined to a Windows input folder it ends up outside it."""
    w = PureWindowsPath(name)
    assert ntpath.splitdrive(name)[0] or w.root or ".." in w.parts
    joined = ntpath.normpath(ntpath.join("D:\\comfy\\input", name))
    assert not joined.startswith("D:\\comfy\\input\\") or ".." in w.parts


def test_every_name_the_check_lets_through_stays_inside_on_posix_and_on_windows():
    """Random names of path pieces: whatever the lexical check accepts, joined to a root and
    normalised the way each system does (posixpath, ntpath), stays inside that root."""
    pieces = ["a", "b c", ".", "..", "...", ".. ", "~", "C:", "c:", "/", "\\", "//", "\\\\", "?", "file:", "x.wav",
              "\x00", " ", "~a"]
    rng = random.Random(0)
    accepted = 0
    for _ in range(20000):
        name = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
        if leads_out_by_name(name):
            continue
        accepted += 1
        posix = posixpath.normpath(posixpath.join("/srv/comfy/input", name.replace("\\", "/")))
        assert posix == "/srv/comfy/input" or posix.startswith("/srv/comfy/input/"), name
        windows = ntpath.normpath(ntpath.join("D:\\comfy\\input", name))
        assert windows == "D:\\comfy\\input" or windows.startswith("D:\\comfy\\input\\"), name
    assert accepted > 1000


def test_links_are_followed_at_any_depth(tree):
    root, outside = tree
    (root / "out").symlink_to(outside)                               # a link straight out
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "hop").symlink_to(root / "hop2")         # inside -> inside -> out
    (root / "hop2").symlink_to(outside / "SECRET_notes.txt")
    (root / "to_dataset").symlink_to(root / "my_dataset")            # a link that stays inside
    (root / "my_dataset" / "up").symlink_to("..")                    # relative, to the root itself
    for name in ("out", "out/SECRET_notes.txt", "out/missing.wav", "deep/er/hop", "my_dataset/up/out/x"):
        with pytest.raises(OutsideInputError):
            resolve(name, [root])
    assert resolve("to_dataset", [root]) == root / "to_dataset"
    assert resolve("my_dataset/up/my_dataset", [root]) == root / "my_dataset/up/my_dataset"
    assert is_inside(root / "deep/er", [root]) and not is_inside(root / "deep/er/hop", [root])


def test_a_linked_input_folder_is_followed_too(tree, tmp_path):
    root, outside = tree
    link = tmp_path / "input_link"
    link.symlink_to(root)                                            # ComfyUI's input/ itself a link
    assert resolve("my_dataset", [link]) == link / "my_dataset"
    with pytest.raises(OutsideInputError):
        resolve("my_dataset", [outside], base=link)                  # the link's target is what counts


def test_the_refusal_is_the_same_for_outside_paths_that_exist_and_that_do_not(tree):
    root, outside = tree
    (root / "exists").symlink_to(outside)
    (root / "missing").symlink_to(outside / "no_such_folder")
    messages = set()
    for name in (str(outside), str(outside / "no_such_folder"), "/etc", "/no_such_folder_qwen", "exists",
                 "missing", "../outside", "../no_such_folder", "exists/SECRET_notes.txt", "missing/x.txt"):
        with pytest.raises(OutsideInputError) as e:
            resolve(name, [root], what="the dataset folder")
        messages.add(str(e.value))
    assert len(messages) == 1
    message = messages.pop()
    assert "SECRET" not in message and str(outside) not in message and "/etc" not in message
    assert f"inside ComfyUI's input folder ({root})" in message and f"{ALLOW_ANY_PATH}=1" in message
    assert message.startswith("The dataset folder must lie inside")


def test_several_roots_and_a_base_folder(tree, tmp_path):
    root, outside = tree
    other = tmp_path / "input2"
    (other / "ds").mkdir(parents=True)
    assert resolve("ds", [root, other], base=other) == other / "ds"
    assert resolve("x.wav", [root], base=root / "my_dataset") == root / "my_dataset" / "x.wav"
    with pytest.raises(OutsideInputError, match="relative to the dataset folder"):
        resolve("../../outside", [root], base=root / "my_dataset", relative_to="the dataset folder")
    with pytest.raises(OutsideInputError) as e:
        resolve("ds", [])                                            # no allowed folder: nothing
    assert str(e.value) == outside_message("the path", [])
    assert confine(root / "my_dataset", [root], "x") == root / "my_dataset"
    with pytest.raises(OutsideInputError):
        confine(outside, [root], "x")


def test_the_message_word_for_word(tree, tmp_path):
    root, _ = tree
    assert outside_message("the dataset folder", [root, tmp_path / "input2"]) == (
        f"The dataset folder must lie inside ComfyUI's input folder ({root} or {tmp_path / 'input2'}), named by a "
        "path relative to it (my_dataset for input/my_dataset). Absolute paths, '..', '~', drive letters, network "
        "paths, URLs and links that lead out of it are refused, because on a shared server a prompt may come from "
        "anyone. On a computer only you use, start ComfyUI with QWEN_TTS_ALLOW_ANY_PATH=1 to read from anywhere.")
    assert outside_message("the audio of a.jsonl line 2", [], "the .jsonl file's folder").startswith(
        "The audio of a.jsonl line 2 must lie inside ComfyUI's input folder ((none registered)), named by a path "
        "relative to the .jsonl file's folder. ")


def test_a_root_on_another_drive_does_not_hide_the_next_one(tree, monkeypatch):
    """Windows: os.path.commonpath raises for paths on two drives; the next root is still asked."""
    root, outside = tree
    commonpath = os.path.commonpath

    def two_drives(paths):
        if str(outside) in paths[0]:
            raise ValueError("Paths don't have the same drive")
        return commonpath(paths)

    monkeypatch.setattr(os.path, "commonpath", two_drives)
    assert is_inside(root / "my_dataset", [outside, root]) and not is_inside(root / "my_dataset", [outside])


def test_any_path_with_the_variable_or_without_roots(tree, monkeypatch):
    root, outside = tree
    monkeypatch.setenv("HOME", str(outside))
    for roots in (None, [root]):
        if roots:
            monkeypatch.setenv(ALLOW_ANY_PATH, "1")
        assert resolve(str(outside), roots) == outside
        assert resolve("~/SECRET_notes.txt", roots) == outside / "SECRET_notes.txt"
        assert resolve("my_dataset", roots, base=root) == root / "my_dataset"      # still relative to input/
        assert confine(outside, roots, "x") == outside
    assert resolve("my_dataset", [root]) == root / "my_dataset"
    for off in ("0", "", "no", "true", " 1"):
        monkeypatch.setenv(ALLOW_ANY_PATH, off)
        with pytest.raises(OutsideInputError):
            resolve(str(outside), [root])


# ------------------------------------------------------------------------------ the dataset scan
def speech(seconds=2.0):
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    return wav[0].repeat(3)[: int(seconds * rate)], rate


def clip(folder: Path, name: str, text=TEXT) -> Path:
    path = folder / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, *speech())
    if text is not None:
        path.with_suffix(".txt").write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def reads(monkeypatch):
    """Every audio file the scan reads."""
    seen = []
    real = dataset_module.read_audio

    def read_audio(path):
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(dataset_module, "read_audio", read_audio)
    return seen


def refusal(tree, make) -> str:
    """The scan's refusal for a dataset that `make(root, outside)` sets up, with the outside files
    present, then with them removed: the same message, and nothing outside was read."""
    root, outside = tree
    clip(outside, "SECRET_clip")
    path = make(root, outside)
    messages = []
    for _ in range(2):
        with pytest.raises(OutsideInputError) as e:
            scan(path, roots=[root])
        messages.append(str(e.value))
        for p in outside.iterdir():
            p.unlink()
    assert messages[0] == messages[1] and "SECRET" not in messages[0] and str(outside) not in messages[0]
    return messages[0]


def test_a_dataset_folder_with_a_link_to_a_file_outside_is_refused(tree, reads):
    def make(root, outside):
        ds = root / "linked"
        clip(ds, "good")
        (ds / "stolen.wav").symlink_to(outside / "SECRET_clip.wav")
        (ds / "stolen.txt").write_text(TEXT)
        return ds
    message = refusal(tree, make)
    assert message.startswith("What stolen.wav links to must lie inside") and "relative to the dataset folder" in message
    assert reads == []


@pytest.mark.parametrize("layout", ["folder", "metadata.csv"])
def test_a_dataset_folder_with_a_linked_subfolder_outside_is_refused(tree, reads, layout):
    def make(root, outside):
        ds = root / "sub_link"
        clip(ds, "good", text=None if layout == "metadata.csv" else TEXT)
        if layout == "metadata.csv":
            (ds / "metadata.csv").write_text(f"good|{TEXT}\n")
        (ds / "wavs").symlink_to(outside)
        return ds
    assert refusal(tree, make).startswith("What wavs links to must lie inside")
    assert reads == []


def test_a_transcript_linked_from_outside_is_refused(tree, reads):
    def make(root, outside):
        ds = root / "text_link"
        clip(ds, "good", text=None)
        (ds / "good.txt").symlink_to(outside / "SECRET_clip.txt")
        return ds
    assert refusal(tree, make).startswith("What good.txt links to must lie inside")
    assert reads == []


@pytest.mark.parametrize("row", [{"audio": "/ABS/SECRET_clip.wav"}, {"audio": "../../outside/SECRET_clip.wav"},
                                 {"audio": "~/SECRET_clip.wav"}, {"audio": "file:///ABS/SECRET_clip.wav"},
                                 {"audio": "C:\\SECRET_clip.wav"}, {"audio": "link/SECRET_clip.wav"},
                                 {"audio": "good.wav", "ref_audio": "/ABS/SECRET_clip.wav"},
                                 {"audio": "good.wav", "ref_audio": "../../outside/SECRET_clip.wav"}])
def test_jsonl_paths_that_lead_out_are_refused(tree, reads, row):
    def make(root, outside):
        ds = root / "recipe"
        clip(ds, "good", text=None)
        (ds / "link").symlink_to(outside)
        lines = [{"audio": "good.wav", "text": TEXT}, {"text": TEXT, **row}]
        (ds / "train.jsonl").write_text("\n".join(json.dumps(r).replace("/ABS", str(outside)) for r in lines))
        return ds / "train.jsonl"
    message = refusal(tree, make)
    field = "ref_audio" if "ref_audio" in row else "audio"
    assert message.startswith(f"The {field} of train.jsonl line 2 must lie inside")
    assert "relative to the .jsonl file's folder" in message
    assert reads == []


def test_a_jsonl_linked_from_outside_is_refused(tree):
    def make(root, outside):
        (outside / "train.jsonl").write_text(json.dumps({"audio": "SECRET_clip.wav", "text": TEXT}))
        (root / "train.jsonl").symlink_to(outside / "train.jsonl")
        return root / "train.jsonl"
    assert refusal(tree, make).startswith("The dataset must lie inside")


@pytest.mark.parametrize("clip_id", ["/ABS/SECRET_clip", "../../outside/SECRET_clip", "../../outside/SECRET_clip.wav",
                                     "~/SECRET_clip", "C:\\SECRET_clip", "file:///ABS/SECRET_clip.wav"])
def test_metadata_csv_ids_that_lead_out_are_refused(tree, reads, clip_id):
    def make(root, outside):
        ds = root / "lj"
        clip(ds / "wavs", "good", text=None)
        (ds / "metadata.csv").write_text(f"good|{TEXT}\n{clip_id.replace('/ABS', str(outside))}|{TEXT}\n")
        return ds
    assert refusal(tree, make).startswith("The audio of metadata.csv line 2 must lie inside")
    assert reads == []


def test_a_metadata_csv_linked_from_outside_is_refused(tree):
    def make(root, outside):
        ds = root / "lj_link"
        clip(ds / "wavs", "good", text=None)
        (ds / "metadata.csv").symlink_to(outside / "SECRET_clip.txt")
        (outside / "SECRET_clip.txt").write_text(f"good|{TEXT}\n")
        return ds
    assert refusal(tree, make).startswith("What metadata.csv links to must lie inside")


def test_a_reference_clip_outside_is_refused(tree):
    root, outside = tree
    clip(root / "ds", "good")
    clip(outside, "SECRET_clip")
    for ref in (outside / "SECRET_clip.wav", outside / "missing.wav"):
        with pytest.raises(OutsideInputError, match="^The reference clip must lie inside"):
            scan(root / "ds", ref_audio=ref, roots=[root])


def test_datasets_inside_scan_as_before_in_all_three_layouts(tree, reads):
    """Relative paths in metadata.csv and .jsonl, links that stay inside, subfolders: the same
    clips with roots as without."""
    root, _ = tree
    ds = root / "my_dataset"
    clip(ds / "sub", "a")
    clip(ds, "b")
    (ds / "shared.wav").symlink_to(root / "my_dataset" / "b.wav")          # a link that stays inside
    (ds / "shared.txt").write_text(TEXT)
    lj = root / "lj"
    clip(lj / "wavs", "one", text=None)
    clip(lj, "two", text=None)
    (lj / "metadata.csv").write_text(f"one|{TEXT}\ntwo|{TEXT}\nthree|{TEXT}\n")
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"audio": "my_dataset/b.wav", "text": TEXT, "ref_audio": "./my_dataset/sub/a.wav"},
        {"audio": "lj/wavs/one.wav", "text": TEXT, "language": "english"})))
    for path in (ds, lj, root / "train.jsonl"):
        confined, free = scan(path, roots=[root]), scan(path)
        assert [(c.name, c.audio, c.text) for c in confined.clips] == [(c.name, c.audio, c.text) for c in free.clips]
        assert confined.ref_audio == free.ref_audio and confined.report() == free.report()
    assert sorted(c.name for c in scan(ds, roots=[root]).clips) == ["b.wav", "shared.wav", "sub/a.wav"]
    assert [r.name for r in scan(lj, roots=[root]).rejected] == ["three"]
    recipe = scan(root / "train.jsonl", roots=[root])
    assert recipe.ref_audio == root / "my_dataset/sub/a.wav" and len(recipe.clips) == 2
    assert all(is_inside(p, [root]) for p in reads)


def test_the_command_line_reads_any_path(tree, tmp_path):
    """roots None (qwen_tts_core.finetune's command line): absolute paths in a .jsonl and an
    absolute reference clip anywhere are read, as before."""
    _, outside = tree
    clip(outside, "elsewhere")
    jsonl = tmp_path / "input" / "abs.jsonl"
    jsonl.write_text(json.dumps({"audio": str(outside / "elsewhere.wav"), "text": TEXT}))
    data = scan(jsonl, ref_audio=outside / "elsewhere.wav")
    assert [c.audio for c in data.clips] == [outside / "elsewhere.wav"] and data.ref_audio == outside / "elsewhere.wav"
    with pytest.raises(InputError):
        scan(jsonl, roots=[tmp_path / "input"])
