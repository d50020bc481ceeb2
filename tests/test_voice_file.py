"""Saved voices (qwen_tts_core.voice): safetensors round trip, safe names, and a clear error for
every kind of bad file."""
import json
import os
import stat
import struct

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
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_changes or {})
    tensors.update(tensor_changes or {})
    save_file({k: v for k, v in tensors.items() if v is not None}, str(path), metadata=meta)


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
    with pytest.raises(VoiceFileError, match="made with a 0.6B model.*re-create"):
        load_voice(path, expect=base)


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
