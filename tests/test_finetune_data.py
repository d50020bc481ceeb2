"""Training data: the three layouts, every kind of unusable clip (skipped, counted, with the
reason), resampling, and the speech-code cache."""
import json
import math

import pytest
import torch

from conftest import AUDIO, MODELS, tiny_model
from qwen_tts_core import speech_codes
from qwen_tts_core.audio import read_wav, resample, write_wav
from qwen_tts_core.errors import InputError
from qwen_tts_core.finetune.dataset import codec_fingerprint, encode, scan

pytestmark = pytest.mark.core
TEXT = "The quick brown fox jumps."


def speech(seconds, rate=24000):
    wav, r = read_wav(AUDIO / "ref_en.wav")
    wav = resample(wav[0], r, rate)
    reps = math.ceil(seconds * rate / wav.numel())
    return wav.repeat(reps)[: int(seconds * rate)]


def clip(folder, name, audio, text=TEXT, rate=24000):
    path = folder / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, audio, rate)
    if text is not None:
        path.with_suffix(".txt").write_text(text, encoding="utf-8")
    return path


def test_folder_of_pairs_keeps_good_clips_and_says_why_the_others_are_skipped(tmp_path):
    clip(tmp_path, "good", speech(2.0))
    stereo, rate = read_wav(AUDIO / "stereo_44k.wav")                   # 1.92 s, 44.1 kHz, 2 channels
    write_wav(tmp_path / "stereo.wav", stereo, rate)
    (tmp_path / "stereo.txt").write_text("  Stereo clip,\nread in two lines. ", encoding="utf-8")
    clip(tmp_path / "sub", "nested", speech(1.5))
    clip(tmp_path, "no_text", speech(2.0), text=None)
    (tmp_path / "orphan.txt").write_text(TEXT)
    clip(tmp_path, "short", speech(0.6))
    clip(tmp_path, "long", speech(31.0))
    clip(tmp_path, "silent", torch.zeros(48000))
    clip(tmp_path, "clipped", (speech(2.0) * 20).clamp(-1, 1))
    clip(tmp_path, "empty_text", speech(2.0), text="  \n")
    clip(tmp_path, "no_words", speech(2.0), text="... !? \u2014")
    clip(tmp_path, "wordy", speech(1.2), text="word " * 150)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (tmp_path / "broken.txt").write_text(TEXT)

    data = scan(tmp_path)
    assert data.layout == "folder"
    assert sorted(c.name for c in data.clips) == ["good.wav", "stereo.wav", "sub/nested.wav"]
    stereo_clip = next(c for c in data.clips if c.name == "stereo.wav")
    assert stereo_clip.text == "Stereo clip, read in two lines."
    assert abs(stereo_clip.seconds - stereo.shape[1] / rate) < 1e-3
    reasons = {r.name: r.reason for r in data.rejected}
    assert set(reasons) == {"no_text.wav", "orphan.txt", "short.wav", "long.wav", "silent.wav", "clipped.wav",
                            "empty_text.wav", "no_words.wav", "wordy.wav", "broken.wav"}
    assert "no transcript" in reasons["no_text.wav"] and "no_text.txt" in reasons["no_text.wav"]
    assert "transcript without audio" in reasons["orphan.txt"]
    assert "shorter than 1 s (0.60 s)" in reasons["short.wav"]
    assert "longer than 30 s (31.0 s)" in reasons["long.wav"]
    assert reasons["silent.wav"].startswith("silent")
    assert reasons["clipped.wav"].startswith("clipped (")
    assert reasons["empty_text.wav"].startswith("the transcript is empty")
    assert reasons["no_words.wav"].startswith("the transcript has nothing to say: no letters or digits")
    assert "would take ~" in reasons["wordy.wav"] and "lasts 1.2 s" in reasons["wordy.wav"]
    assert "broken.wav" in reasons["broken.wav"]
    assert data.ref_audio == tmp_path / "good.wav"                      # the longest usable clip
    report = data.report()
    assert report.startswith("3 clips, 5.4 s of speech") and "10 rejected:" in report
    assert "  short.wav: shorter than 1 s" in report


def test_ljspeech_metadata_csv(tmp_path):
    clip(tmp_path / "wavs", "a", speech(1.5), text=None)
    clip(tmp_path, "b", speech(1.5), text=None)                        # beside the csv also works
    (tmp_path / "metadata.csv").write_text(
        "a|Dr. Smith paid $5.|Doctor Smith paid five dollars.\nb|Plain text\n\nc|missing clip\nno separator here\n",
        encoding="utf-8")
    data = scan(tmp_path)
    assert data.layout == "metadata.csv"
    assert [(c.name, c.text) for c in data.clips] == [("a", "Doctor Smith paid five dollars."), ("b", "Plain text")]
    assert {r.name: r.reason for r in data.rejected} == {
        "c": "audio not found (looked for wavs/c.wav and c.wav)",
        "metadata.csv line 5": "expected id|transcript"}


def test_official_jsonl(tmp_path):
    clip(tmp_path / "clips", "one", speech(1.5), text=None)
    clip(tmp_path / "clips", "two", speech(2.5), text=None)
    clip(tmp_path, "ref", speech(3.0), text=None)
    rows = [{"audio": "clips/one.wav", "text": "First.", "ref_audio": "ref.wav", "language": "English"},
            {"audio": "clips/two.wav", "text": "Second one.", "ref_audio": "ref.wav"},
            {"audio": "clips/gone.wav", "text": "Missing."},
            {"text": "no audio key"}]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = scan(tmp_path / "train.jsonl", language="German")
    assert data.layout == "jsonl" and data.root == tmp_path
    assert [(c.text, c.language) for c in data.clips] == [("First.", "english"), ("Second one.", "german")]
    assert data.ref_audio == tmp_path / "ref.wav"                        # the rows' reference
    assert {r.name: r.reason for r in data.rejected} == {
        "train.jsonl line 3": "audio not found: clips/gone.wav",
        "train.jsonl line 4": 'needs "audio" (a path) and "text"',
        "train.jsonl line 5": "not valid JSON (Expecting property name enclosed in double quotes)"}


def test_datasets_that_cannot_be_used(tmp_path):
    with pytest.raises(InputError, match="Dataset not found"):
        scan(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no audio files. Put name.wav \\+ name.txt pairs"):
        scan(tmp_path / "empty")
    bad = tmp_path / "bad"
    clip(bad, "short", speech(0.5))
    clip(bad, "silent", torch.zeros(48000))
    with pytest.raises(InputError) as e:
        scan(bad)
    assert "No usable clip" in str(e.value) and "short.wav: shorter than 1 s" in str(e.value) \
        and "silent.wav: silent" in str(e.value)
    (tmp_path / "notes.csv").write_text("x")
    with pytest.raises(InputError, match="not a .jsonl dataset"):
        scan(tmp_path / "notes.csv")
    clip(tmp_path / "ok", "a", speech(1.5))
    with pytest.raises(InputError, match="Reference audio not found"):
        scan(tmp_path / "ok", ref_audio=tmp_path / "ok" / "nope.wav")


def test_codes_are_resampled_mono_and_cached(tmp_path, monkeypatch):
    codec = tiny_model("Tiny-Base").codec
    stereo, rate = read_wav(AUDIO / "stereo_44k.wav")
    write_wav(tmp_path / "s.wav", stereo, rate)
    (tmp_path / "s.txt").write_text(TEXT)
    data = scan(tmp_path)
    fp = codec_fingerprint(MODELS / "Tiny-Base")
    calls = []
    real = speech_codes.encode
    monkeypatch.setattr(speech_codes, "encode", lambda *a: calls.append(a[2]) or real(*a))
    first = encode(data, codec, fp)
    assert calls == [rate]                                             # the file as it is: 44.1 kHz stereo
    want = real(codec, stereo.mean(0), rate)                           # mono, then resampled and encoded
    assert torch.equal(first[0].codes, want) and first[0].text == TEXT
    assert len(list((tmp_path / ".qwen-tts-codes").glob("*.safetensors"))) == 1

    again = encode(scan(tmp_path), codec, fp)                          # a second run: from the cache
    assert calls == [rate] and torch.equal(again[0].codes, want)
    encode(data, codec, "another-tokenizer")                           # other tokenizer: encoded again
    assert len(calls) == 2
    for f in (tmp_path / ".qwen-tts-codes").glob(f"*{fp}.safetensors"):
        f.write_bytes(b"damaged")                                      # a damaged cache entry is redone
    redone = encode(data, codec, fp)
    assert len(calls) == 3 and torch.equal(redone[0].codes, want)
