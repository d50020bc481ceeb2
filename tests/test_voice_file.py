"""Saved voices (qwen_tts_core.voice): safetensors round trip, safe names, and a clear error for
every kind of bad file."""
import json
import os
import re
import stat
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import AUDIO, tiny_model
from qwen_tts_core.audio import read_wav
from qwen_tts_core.errors import InputError, VoiceFileError
from qwen_tts_core.prompt import VoicePrompt
from qwen_tts_core.voice import (FORMAT_VERSION, Voice, list_voices, load_voice, save_voice,
                                 voice_file_name, voice_path)

pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def base():
    return tiny_model("Tiny-Base", speech_tokenizer=False)


@pytest.fixture(scope="module")
def xvector_voice(base):
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    return Voice.from_model(base, base.create_voice_clone_prompt(wav, rate, x_vector_only=True))


def in_context_voice(base, frames=20, text="Hello there, this is me."):
    d = base.config.talker.hidden_size
    codes = torch.randint(0, 2048, (frames, 16), generator=torch.Generator().manual_seed(0))
    return Voice.from_model(base, VoicePrompt(torch.randn(d), codes, text))


def test_x_vector_round_trip(tmp_path, base, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "narrator")
    assert path == tmp_path.resolve() / "narrator.safetensors"
    back = load_voice(path, expect=base)
    assert torch.equal(back.prompt.speaker_embedding, xvector_voice.prompt.speaker_embedding)
    assert back.prompt.ref_codes is None and back.mode == "x_vector"
    assert (back.model_type, back.model_size, back.hidden_size, back.name) == \
        ("base", base.config.tts_model_size, base.config.talker.hidden_size, "narrator")
    assert list_voices(tmp_path) == ["narrator"]
    assert [p.name for p in tmp_path.iterdir()] == ["narrator.safetensors"]  # no temp file left


def test_in_context_round_trip_and_metadata(tmp_path, base):
    voice = in_context_voice(base)
    path = save_voice(voice, tmp_path, "anna")
    back = load_voice(path, expect=base)
    assert torch.equal(back.prompt.ref_codes, voice.prompt.ref_codes)
    assert back.prompt.ref_text == "Hello there, this is me." and back.mode == "in_context"
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    meta = json.loads(path.read_bytes()[8:8 + header_len])["__metadata__"]
    assert meta["format"] == "qwen-tts-voice" and meta["format_version"] == str(FORMAT_VERSION)
    assert meta["hidden_size"] == str(base.config.talker.hidden_size) and meta["mode"] == "in_context"


def test_file_is_not_pickle(tmp_path, xvector_voice):
    data = save_voice(xvector_voice, tmp_path, "v").read_bytes()
    assert not data.startswith(b"\x80") and not data.startswith(b"PK")  # pickle / torch zip
    assert data[8:9] == b"{"                                              # safetensors JSON header


@pytest.mark.parametrize("name, expected", [
    ("narrator", "narrator.safetensors"),
    ("  My Voice  ", "My Voice.safetensors"),
    ("anna.safetensors", "anna.safetensors"),
    ("what: a *voice*?", "what_ a _voice_.safetensors"),
    ("Ünïcode-名字_1", "Ünïcode-名字_1.safetensors"),
    ("console", "console.safetensors"), ("com10", "com10.safetensors"), ("my con", "my con.safetensors"),
    ("aux_voice", "aux_voice.safetensors"), ("nul-2", "nul-2.safetensors"),
])
def test_names_are_sanitised(name, expected):
    assert voice_file_name(name) == expected


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "a\\b", ".hidden", "/etc/passwd", "", "   ",
                                  "x" * 101])
def test_path_tricks_and_empty_names_are_rejected(tmp_path, xvector_voice, name):
    with pytest.raises(InputError):
        save_voice(xvector_voice, tmp_path / "voices", name)
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "voices").exists()
    with pytest.raises(InputError):
        voice_path(tmp_path, name)


@pytest.mark.parametrize("name", ["con", "CON", "nul", "Nul.txt", "prn", "aux", "com1", "COM9", "lpt1",
                                  "lpt9.safetensors", "con.txt", " aux .x", "com\u00b9", "nul.safetensors"])
def test_windows_device_names_are_rejected(tmp_path, xvector_voice, name):
    with pytest.raises(InputError, match="device name that Windows reserves"):
        save_voice(xvector_voice, tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_the_windows_device_name_message_word_for_word(tmp_path, xvector_voice):
    with pytest.raises(InputError) as e:
        save_voice(xvector_voice, tmp_path, "Lpt1.wav")
    assert str(e.value) == (
        "Invalid voice name 'Lpt1.wav': LPT1 is a device name that Windows reserves (CON, PRN, AUX, NUL, "
        "COM0-COM9, LPT0-LPT9, also with an extension such as 'con.txt'); such a file cannot be made or "
        "opened there. Choose another name.")


def test_existing_voice_is_kept_unless_overwrite(tmp_path, base, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "v")
    before = path.read_bytes()
    assert save_voice(xvector_voice, tmp_path, "v") == path           # same voice again: no-op
    other = in_context_voice(base)
    with pytest.raises(VoiceFileError, match="already exists.*overwrite"):
        save_voice(other, tmp_path, "v")
    assert path.read_bytes() == before
    save_voice(other, tmp_path, "v", overwrite=True)
    assert load_voice(path).mode == "in_context"


def test_corrupt_file(tmp_path, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "v")
    path.write_bytes(path.read_bytes()[:-7])                            # truncated
    with pytest.raises(VoiceFileError, match="damaged or not a safetensors file"):
        load_voice(path)
    path.write_bytes(b"this is not a voice at all")
    with pytest.raises(VoiceFileError, match="damaged or not a safetensors file"):
        load_voice(path)


def _resave(path, meta_changes=None, tensor_changes=None):
    """Rewrites a voice file with some metadata / tensors changed (None: removed)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_changes or {})
    tensors.update(tensor_changes or {})
    save_file({k: v for k, v in tensors.items() if v is not None}, str(path),
              metadata={k: v for k, v in meta.items() if v is not None})


def test_newer_format_version(tmp_path, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "v")
    _resave(path, {"format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(VoiceFileError, match="newer version.*Update the node pack"):
        load_voice(path)


def test_non_voice_safetensors(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(VoiceFileError, match="not a Qwen3-TTS voice"):
        load_voice(path)


def test_voice_of_another_model_size(tmp_path, base):
    small = Voice(VoicePrompt(torch.randn(16)), "base", "0b6", 16)
    path = save_voice(small, tmp_path, "small")
    assert load_voice(path).hidden_size == 16                          # readable on its own
    with pytest.raises(VoiceFileError, match=re.escape(
            "The voice 'small' was made with a 0.6B model (x-vector of 16 values) but the loaded model Tiny-Base "
            "is 1.7B (32). Load a 0.6B Base model, or re-create the voice from its reference audio with this model.")):
        load_voice(path, expect=base)
    with pytest.raises(VoiceFileError, match="^The voice was made with a 0.6B model"):     # an unnamed voice
        small.check_fits(base)


def test_voice_with_a_non_base_model(tmp_path, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "v")
    with pytest.raises(VoiceFileError, match="Base model"):
        load_voice(path, expect=tiny_model("Tiny-CustomVoice", speech_tokenizer=False))


@pytest.mark.parametrize("change", [
    {"tensor_changes": {"speaker_embedding": torch.randn(5)}},
    {"tensor_changes": {"ref_codes": torch.full((4, 16), 5000, dtype=torch.int64)}},
    {"meta_changes": {"mode": "in_context"}},
    {"meta_changes": {"format_version": "one"}},
    {"tensor_changes": {"speaker_embedding": torch.full((32,), float("nan"))}},
])
def test_inconsistent_contents_are_damaged(tmp_path, base, change):
    path = save_voice(in_context_voice(base) if "ref_codes" in str(change) else
                      Voice(VoicePrompt(torch.randn(base.config.talker.hidden_size)), "base", "1b7",
                            base.config.talker.hidden_size), tmp_path, "v")
    _resave(path, **change)
    with pytest.raises(VoiceFileError, match="damaged"):
        load_voice(path)


def test_missing_file(tmp_path):
    with pytest.raises(VoiceFileError, match="not found"):
        load_voice(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------ every field, every check
def _header(path) -> dict:
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    return json.loads(path.read_bytes()[8:8 + header_len])


def test_the_file_holds_exactly_the_voice(tmp_path, base):
    voice = in_context_voice(base)
    voice.prompt.ref_codes = voice.prompt.ref_codes.int()                # int32 codes are stored as int64
    path = save_voice(voice, tmp_path, "anna")
    header = _header(path)
    assert header.pop("__metadata__") == {
        "format": "qwen-tts-voice", "format_version": "1", "model_type": "base", "model_size": "1b7",
        "hidden_size": str(base.config.talker.hidden_size), "mode": "in_context",
        "ref_text": "Hello there, this is me.", "name": "anna"}
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items()} == {
        "speaker_embedding": ("F32", [base.config.talker.hidden_size]), "ref_codes": ("I64", [20, 16])}
    path.rename(tmp_path / "renamed.safetensors")                        # the name inside wins
    back = load_voice(tmp_path / "renamed.safetensors", expect=base)
    assert (back.name, back.model_type, back.model_size) == ("anna", "base", "1b7")
    assert torch.equal(back.prompt.ref_codes, voice.prompt.ref_codes.long())
    assert back.describe() == "voice anna: in_context clone made with a 1.7B base model, 20 reference frames, " \
                              "transcript: 'Hello there, this is me.'"
    _resave(tmp_path / "renamed.safetensors", {"model_type": "base-v2", "model_size": "0b6"})
    back = load_voice(tmp_path / "renamed.safetensors")
    assert (back.model_type, back.model_size) == ("base-v2", "0b6")
    unsaved = Voice(VoicePrompt(torch.randn(16)), "base", "", 16)
    assert unsaved.describe() == "voice (unsaved): x_vector clone made with a unknown-size base model"
    assert Voice.from_model(base, voice.prompt).name == "" and Voice.from_model(base, voice.prompt, "x").name == "x"


def test_a_file_without_the_optional_fields_loads_with_defaults(tmp_path, base, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "v")
    _resave(path, {"model_type": None, "model_size": None, "name": None, "ref_text": None})
    back = load_voice(path, expect=base)
    assert (back.name, back.model_type, back.model_size, back.prompt.ref_text) == ("v", "base", "", None)


@pytest.mark.parametrize("change, problems", [
    ({"tensor_changes": {"speaker_embedding": None}}, "speaker embedding missing or of the wrong size"),
    ({"tensor_changes": {"speaker_embedding": torch.randn(1, 32)}}, "speaker embedding missing or of the wrong size"),
    ({"tensor_changes": {"speaker_embedding": torch.ones(32, dtype=torch.int64)}},
     "speaker embedding missing or of the wrong size"),
    ({"meta_changes": {"hidden_size": None}}, "speaker embedding missing or of the wrong size"),
    ({"meta_changes": {"hidden_size": "wide"}}, "speaker embedding missing or of the wrong size"),
    ({"tensor_changes": {"speaker_embedding": torch.full((32,), float("inf"))}}, "speaker embedding holds NaN/inf"),
    ({"meta_changes": {"mode": "x_vector"}}, "mode 'x_vector' does not match its contents"),
    ({"meta_changes": {"mode": None}}, "mode None does not match its contents"),
    ({"tensor_changes": {"ref_codes": torch.zeros(4, 8, dtype=torch.int64)}}, "reference codes invalid"),
    ({"tensor_changes": {"ref_codes": torch.zeros(4, 16, 1, dtype=torch.int64)}}, "reference codes invalid"),
    ({"tensor_changes": {"ref_codes": torch.zeros(4, 16, dtype=torch.int32)}}, "reference codes invalid"),
    ({"tensor_changes": {"ref_codes": torch.zeros(0, 16, dtype=torch.int64)}}, "reference codes invalid"),
    ({"tensor_changes": {"ref_codes": torch.full((4, 16), -1, dtype=torch.int64)}}, "reference codes invalid"),
    ({"tensor_changes": {"ref_codes": torch.full((4, 16), 2048, dtype=torch.int64)}}, "reference codes invalid"),
    ({"meta_changes": {"ref_text": "  "}}, "in-context voice without its transcript"),
    ({"meta_changes": {"ref_text": None}}, "in-context voice without its transcript"),
    ({"meta_changes": {"ref_text": None, "hidden_size": "7"}},
     "speaker embedding missing or of the wrong size; in-context voice without its transcript"),
])
def test_each_damage_is_named(tmp_path, base, change, problems):
    path = save_voice(in_context_voice(base), tmp_path, "v")
    _resave(path, **change)
    with pytest.raises(VoiceFileError, match=f"^v.safetensors is damaged \\({re.escape(problems)}\\). Delete it "
                                             "and save the voice again from its reference audio.$"):
        load_voice(path)


def test_reference_codes_span_the_whole_codebook(tmp_path, base):
    voice = in_context_voice(base)
    voice.prompt.ref_codes[0, 0], voice.prompt.ref_codes[1, 1] = 0, 2047
    assert torch.equal(load_voice(save_voice(voice, tmp_path, "v")).prompt.ref_codes, voice.prompt.ref_codes)


@pytest.mark.parametrize("meta, message", [
    ({"format": None}, "^v.safetensors is a safetensors file but not a Qwen3-TTS voice \\(it has no voice "
                       "metadata\\). Voice files are made by the Save Voice node.$"),
    ({"format_version": None}, "^v.safetensors has an unreadable voice format version None; it is damaged: "
                               "save the voice again.$"),
    ({"format_version": "one"}, "^v.safetensors has an unreadable voice format version 'one'"),
    ({"format_version": "0"}, "^v.safetensors has an invalid voice format version 0.$"),
])
def test_format_problems(tmp_path, xvector_voice, meta, message):
    path = save_voice(xvector_voice, tmp_path, "v")
    _resave(path, meta)
    with pytest.raises(VoiceFileError, match=message):
        load_voice(path)


def test_a_damaged_file_says_what_to_do(tmp_path, xvector_voice):
    path = save_voice(xvector_voice, tmp_path, "v")
    path.write_bytes(b"not a voice")
    with pytest.raises(VoiceFileError, match=r"^v.safetensors is damaged or not a safetensors file \(.+\). "
                                             r"Delete it and save the voice again from its reference audio.$"):
        load_voice(path)


@pytest.mark.parametrize("prompt, message", [
    (VoicePrompt(None), "^The voice has no valid speaker embedding; make it with the clone node.$"),
    (VoicePrompt(torch.randn(2, 16)), "no valid speaker embedding"),
    (VoicePrompt(torch.zeros(0)), "no valid speaker embedding"),
    (VoicePrompt(torch.randn(16), torch.zeros(4, 8, dtype=torch.int64), "hi"),
     r"^The voice's reference codes have shape \(4, 8\); expected \[frames, 16\].$"),
    (VoicePrompt(torch.randn(16), torch.zeros(4, 16, 2, dtype=torch.int64), "hi"), r"have shape \(4, 16, 2\)"),
])
def test_a_voice_that_cannot_be_saved(tmp_path, prompt, message):
    with pytest.raises(InputError, match=message):
        save_voice(Voice(prompt, "base", "0b6", 16), tmp_path, "v")
    assert list(tmp_path.iterdir()) == []


def test_saving_over_another_voice_or_a_damaged_file(tmp_path, base):
    d = base.config.talker.hidden_size
    first, second = (Voice.from_model(base, VoicePrompt(torch.randn(d))) for _ in range(2))
    path = save_voice(first, tmp_path, "v")
    with pytest.raises(VoiceFileError, match=r"^A different voice named 'v' already exists \(.+v.safetensors\). "
                                             r"Choose another name, or turn on 'overwrite' to replace it.$"):
        save_voice(second, tmp_path, "v")                             # same kind, other x-vector
    path.write_bytes(b"damaged")
    with pytest.raises(VoiceFileError, match="already exists"):
        save_voice(second, tmp_path, "v")
    save_voice(second, tmp_path, "v", overwrite=True)
    assert torch.equal(load_voice(path).prompt.speaker_embedding, second.prompt.speaker_embedding)


def test_saving_writes_a_hidden_temporary_file_beside_the_voice_then_renames_it(tmp_path, xvector_voice, monkeypatch):
    from qwen_tts_core import voice as voice_module

    folder = tmp_path / "models" / "qwen-tts-voices"                   # made with its parents
    renames = []
    monkeypatch.setattr(voice_module.os, "replace", lambda src, dst: renames.append((src, dst)) or os.rename(src, dst))
    path = save_voice(xvector_voice, folder, "narrator")
    (src, dst), = renames
    assert Path(dst) == path and Path(src).parent == folder.resolve()
    assert Path(src).name.startswith(".narrator.") and Path(src).name.endswith(".tmp")

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(voice_module.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_voice(xvector_voice, folder, "other")
    assert sorted(p.name for p in folder.iterdir()) == ["narrator.safetensors"]    # no temporary file left


def test_only_visible_voice_files_are_listed(tmp_path, xvector_voice):
    save_voice(xvector_voice, tmp_path, "b")
    save_voice(xvector_voice, tmp_path, "a")
    (tmp_path / ".a.1234.tmp").write_bytes(b"")
    (tmp_path / ".hidden.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a voice")
    (tmp_path / "folder.safetensors").mkdir()
    assert list_voices(tmp_path) == ["a", "b"]
    assert list_voices(tmp_path / "missing") == []


@pytest.mark.parametrize("name, message", [
    (42, "^The voice name must be text, got int.$"),
    ("a..b", r"^Invalid voice name 'a..b': a name cannot contain '/', '\\' or '..' or start with a dot. Use "
             r"letters, digits, spaces, '-' and '_'.$"),
    ("x" * 101, "^The voice name is 101 characters long; use at most 100.$"),
    ("  .safetensors", "^The voice name is empty; type a name such as 'narrator'.$"),
])
def test_name_messages(name, message):
    with pytest.raises(InputError, match=message):
        voice_file_name(name)
    assert voice_file_name("x" * 100) == "x" * 100 + ".safetensors"


def test_the_size_message_of_a_model_of_unknown_size(tmp_path):
    from types import SimpleNamespace

    tts = SimpleNamespace(folder=Path("Custom-Base"), config=SimpleNamespace(
        tts_model_type="base", tts_model_size="", talker=SimpleNamespace(hidden_size=64)))
    voice = Voice(VoicePrompt(torch.randn(32)), "base", "", 32, "anna")
    with pytest.raises(VoiceFileError, match=re.escape(
            "The voice 'anna' was made with a unknown-size model (x-vector of 32 values) but the loaded model "
            "Custom-Base is unknown-size (64). Load a unknown-size Base model, or re-create the voice from its "
            "reference audio with this model.")):
        voice.check_fits(tts)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_voice_files_follow_the_umask(tmp_path, xvector_voice, umask):
    """Like ComfyUI's own outputs (0644 under umask 022), so others sharing the folder can read them;
    also when a voice is replaced (overwrite)."""
    old = os.umask(umask)
    try:
        path = save_voice(xvector_voice, tmp_path, "shared")
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
        other = Voice(VoicePrompt(xvector_voice.prompt.speaker_embedding + 1), "base",
                      xvector_voice.model_size, xvector_voice.hidden_size)
        os.chmod(path, 0o600)
        save_voice(other, tmp_path, "shared", overwrite=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.safetensors"]


def test_links_pointing_outside_the_folder_are_not_listed_and_say_why(tmp_path, base, xvector_voice):
    """Load Voice lists only what it will load; a link to a file elsewhere (listed before, then
    refused as an 'Invalid voice name') is named as such when asked for."""
    voices, elsewhere = tmp_path / "voices", tmp_path / "elsewhere"
    outside = save_voice(xvector_voice, elsewhere, "shared")
    save_voice(xvector_voice, voices, "mine")
    (voices / "linked.safetensors").symlink_to(outside)
    (voices / "alias.safetensors").symlink_to(voices / "mine.safetensors")      # inside: fine
    (voices / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    assert list_voices(voices) == ["alias", "mine"]
    assert load_voice(voice_path(voices, "alias"), expect=base).name == "mine"
    with pytest.raises(InputError, match=r"'linked' is a symbolic link to .*elsewhere.*, outside the voices "
                                         r"folder .*Copy the file into the folder"):
        voice_path(voices, "linked")
    with pytest.raises(InputError, match="symbolic link"):                       # never written through
        save_voice(in_context_voice(base), voices, "linked", overwrite=True)
    assert load_voice(outside).prompt.ref_codes is None                          # the target is untouched


def test_a_temporary_name_that_is_taken_is_drawn_again(tmp_path, monkeypatch, xvector_voice):
    """Saving writes to a fresh temporary file first: a name already there (another save at the
    same moment) is skipped for the next draw, and the other file is left alone; after 10 taken
    names it gives up with the folder."""
    import secrets

    (tmp_path / ".narrator.taken.tmp").write_bytes(b"another save's")
    draws = iter(["taken", "taken", "free"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    path = save_voice(xvector_voice, tmp_path, "narrator")
    assert next(draws, "all drawn") == "all drawn"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".narrator.taken.tmp", "narrator.safetensors"]
    assert (tmp_path / ".narrator.taken.tmp").read_bytes() == b"another save's"
    assert torch.equal(load_voice(path).prompt.speaker_embedding, xvector_voice.prompt.speaker_embedding)
    (tmp_path / ".second.taken.tmp").write_bytes(b"")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "taken")
    with pytest.raises(FileExistsError) as e:
        save_voice(xvector_voice, tmp_path, "second")
    assert str(e.value) == f"Could not create a temporary file in {tmp_path}."
    assert not (tmp_path / "second.safetensors").exists()
