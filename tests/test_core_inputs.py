"""Bad input to the core: each gets a specific, actionable error (or, where the issue asks for
it, a conversion or a warning)."""
import logging
import math
import re

import pytest
import torch

from conftest import AUDIO, tiny_model
from qwen_tts_core import InputError, UnsupportedModeError
from qwen_tts_core.audio import read_wav
from qwen_tts_core.prompt import VoicePrompt

pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def cv():
    return tiny_model("Tiny-CustomVoice", speech_tokenizer=False)


@pytest.fixture(scope="module")
def vd():
    return tiny_model("Tiny-VoiceDesign", speech_tokenizer=False)


@pytest.fixture(scope="module")
def base():
    return tiny_model("Tiny-Base", speech_tokenizer=False)


def speech(seconds=None, rate=24000):
    wav, sr = read_wav(AUDIO / "ref_en.wav")
    if rate != sr:
        import torchaudio.functional as AF
        wav = AF.resample(wav, sr, rate)
    if seconds is not None:
        reps = math.ceil(seconds * rate / wav.shape[1])
        wav = wav.repeat(1, reps)[:, : int(seconds * rate)]
    return wav, rate


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text(cv, text):
    with pytest.raises(InputError, match="text is empty"):
        cv.generate_custom_voice(text, "vivian", max_frames=3)


NOTHING_TO_SAY = ["🎉🎉 👍", "\x00\x00", "...!?", "— … —", "\u200b\u200b", "♪ ♫"]


@pytest.mark.parametrize("text", NOTHING_TO_SAY)
def test_text_without_words_is_refused_by_every_mode(cv, vd, base, text):
    """The one text check (qwen_tts_core.text.check_text) guards every mode, as it
    guards the long-form renderers."""
    from qwen_tts_core.longform import narrate

    calls = [lambda: cv.generate_custom_voice(text, "vivian", max_frames=3),
             lambda: vd.generate_voice_design(text, "A calm voice.", max_frames=3),
             lambda: base.generate_voice_clone(text, VoicePrompt(torch.zeros(base.config.talker.hidden_size)),
                                               max_frames=3),
             lambda: narrate(text, object())]
    for call in calls:
        with pytest.raises(InputError, match="The text has nothing to say: no letters or digits"):
            call()
    with pytest.raises(InputError, match="Text 2 of 3: The text has nothing to say"):
        cv.generate_custom_voice(["One.", text, "Three."], "vivian", max_frames=3)


def test_the_text_check_keeps_its_old_import_path():
    from qwen_tts_core import text
    from qwen_tts_core.longform import text as longform_text

    assert longform_text.check_text is text.check_text and longform_text.has_words is text.has_words


def test_text_in_a_script_the_model_does_not_know_gets_a_note(cv, caplog):
    with caplog.at_level(logging.WARNING):
        out = cv.generate_custom_voice("مرحبا بالعالم، كيف حالك؟", "vivian", max_frames=2, seed=0)
    assert len(out.codes) == 1                                          # generated all the same
    assert out.warnings == [
        "Much of the text is in Arabic script, which none of the model's languages use (Chinese, English, "
        "German, Italian, Portuguese, Spanish, Japanese, Korean, French, Russian): expect it to be "
        "mispronounced or skipped."]
    assert "Arabic script" in caplog.text
    out = cv.generate_custom_voice(["Hello, my friend Ahmed (أحمد), welcome home.", "Γειά σου κόσμε", "你好"], "vivian",
                                   max_frames=2)
    assert len(out.warnings) == 1 and out.warnings[0].startswith("Text 2: Much of the text is in Greek script")


def test_text_longer_than_one_generation(cv):
    with pytest.raises(InputError, match="long-text node"):
        cv.generate_custom_voice("word " * 5000, "vivian", max_frames=3)


def test_prompt_plus_frames_beyond_context(cv):
    with pytest.raises(InputError, match="exceeds the model context"):
        cv.generate_custom_voice("Hello.", "vivian", max_frames=40000)


def test_unknown_language_lists_valid_ones(cv):
    with pytest.raises(InputError, match="Unsupported language 'klingon'.*english"):
        cv.generate_custom_voice("Hello.", "vivian", language="klingon", max_frames=3)


def test_dialect_is_not_a_selectable_language(cv):
    with pytest.raises(InputError, match="Unsupported language"):
        cv.generate_custom_voice("Hello.", "vivian", language="sichuan_dialect", max_frames=3)


def test_unknown_speaker_lists_valid_ones(cv):
    with pytest.raises(InputError, match="Unknown speaker 'bob'.*vivian"):
        cv.generate_custom_voice("Hello.", "bob", max_frames=3)


def test_names_are_case_insensitive(cv):
    out = cv.generate_custom_voice("Hello.", "VIVIAN", language="English", max_frames=3, seed=1)
    assert out.codes[0].shape[1] == 16


def test_voice_design_on_base_model(base):
    with pytest.raises(UnsupportedModeError, match="VoiceDesign"):
        base.generate_voice_design("Hello.", "A calm voice.")


def test_custom_voice_on_voice_design_model(vd):
    with pytest.raises(UnsupportedModeError, match="CustomVoice"):
        vd.generate_custom_voice("Hello.", "vivian")


def test_speaker_on_voice_design_model(vd):
    from qwen_tts_core.prompt import Request
    with pytest.raises(InputError, match="no built-in speakers"):
        vd.generate([Request("Hello.", speaker="vivian")], max_frames=3)


def test_clone_on_custom_voice_model(cv):
    wav, sr = speech()
    with pytest.raises(UnsupportedModeError, match="Base model"):
        cv.create_voice_clone_prompt(wav, sr, x_vector_only=True)


def test_batch_size_mismatch(cv):
    with pytest.raises(InputError, match="Got 2 values for a batch of 3"):
        cv.generate_custom_voice(["a", "b", "c"], ["vivian", "ryan"], max_frames=3)


def test_instruction_on_0_6b_custom_voice_is_reported(tmp_path, caplog):
    import json
    import shutil
    from conftest import MODELS
    from qwen_tts_core.api import QwenTTS
    folder = tmp_path / "m"
    shutil.copytree(MODELS / "Tiny-CustomVoice", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tts_model_size"] = "0b6"
    (folder / "config.json").write_text(json.dumps(cfg))
    tts = QwenTTS.from_pretrained(folder, dtype="fp32", device="cpu", speech_tokenizer=False)
    with caplog.at_level(logging.WARNING):
        out = tts.generate_custom_voice("Hello.", "vivian", instruct="Shout!", max_frames=3, seed=0)
    assert any("ignored" in w for w in out.warnings)
    assert "ignored" in caplog.text


# ---------------------------------------------------------------- reference audio
@pytest.mark.parametrize("make,match", [
    (lambda: (torch.zeros(1, 0), 24000), "empty"),
    (lambda: (torch.zeros(1, 48000), 24000), "silent"),
    (lambda: (torch.full((1, 48000), float("nan")), 24000), "NaN"),
    (lambda: (speech()[0].index_fill(1, torch.tensor([100]), float("inf")), 24000), "NaN/inf"),
    (lambda: (speech()[0][:, :12000], 24000), "at least 1 s"),
    (lambda: (speech()[0], 0), "not plausible"),
])
def test_bad_reference_audio(base, make, match):
    wav, sr = make()
    with pytest.raises(InputError, match=match):
        base.create_voice_clone_prompt(wav, sr, x_vector_only=True)


@pytest.mark.parametrize("offset", [0.3, -0.5, 1e-3])
def test_a_clip_that_is_only_a_dc_offset_is_silent(base, offset):
    wav = torch.full((1, 48000), offset) + 1e-6 * torch.randn(1, 48000, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="silent \\(or only a constant DC offset\\)"):
        base.create_voice_clone_prompt(wav, 24000, x_vector_only=True)
    wav, sr = speech()
    assert base.speaker_embedding(wav + offset, sr).isfinite().all()           # speech on an offset is fine


def clipped(gain: float, limit: float = 1.0):
    wav, sr = speech()
    return (wav * gain).clamp(-limit, limit), sr


@pytest.mark.parametrize("make, share", [
    (lambda: clipped(8.0), 0.05),                                   # 8x too loud, clipped at full scale
    (lambda: clipped(8.0, 32767 / 32768), 0.05),                    # the same as 16-bit PCM
    (lambda: clipped(8.0, 1.5), 0.05),                              # float audio through a limiter at 1.5
    (lambda: (clipped(8.0)[0].repeat(2, 1), 24000), 0.05),          # stereo
])
def test_a_badly_clipped_clip_is_refused(base, make, share):
    wav, sr = make()
    with pytest.raises(InputError, match=r"badly clipped: (\d+\.\d)% of its samples are at full scale") as e:
        base.create_voice_clone_prompt(wav, sr, x_vector_only=True)
    assert float(re.search(r"(\d+\.\d)%", str(e.value)).group(1)) / 100 > share


@pytest.mark.parametrize("make", [
    lambda: (speech()[0] / speech()[0].abs().max(), 24000),        # normalised to a peak of exactly 1
    lambda: clipped(1.5),                                           # a few peaks clipped: under 1%
    lambda: (speech()[0] * 3.0, 24000),                             # float audio beyond 1, not clipped
])
def test_loud_but_clean_clips_are_accepted(base, make):
    wav, sr = make()
    assert base.speaker_embedding(wav, sr).isfinite().all()


def test_in_context_clone_needs_transcript(base):
    wav, sr = speech()
    with pytest.raises(InputError, match="transcript"):
        base.create_voice_clone_prompt(wav, sr, ref_text="  ")


def test_long_reference_is_trimmed_with_a_warning(base, caplog):
    long_wav, sr = speech(seconds=75)
    with caplog.at_level(logging.WARNING):
        emb = base.speaker_embedding(long_wav, sr)
    assert "first 60 s" in caplog.text
    assert torch.allclose(emb, base.speaker_embedding(long_wav[:, : 60 * sr], sr), atol=1e-5)


def test_stereo_and_other_rates_are_converted(base):
    mono, sr = speech()
    ref = base.speaker_embedding(mono, sr)
    stereo = base.speaker_embedding(mono.repeat(2, 1), sr)
    assert torch.allclose(stereo, ref, atol=1e-5)
    wav48, sr48 = speech(rate=48000)
    resampled = base.speaker_embedding(wav48, sr48)
    cos = torch.nn.functional.cosine_similarity(resampled, ref, dim=0)
    assert cos > 0.99  # same speech through two resamplings


def test_voice_from_another_model_size(base):
    voice = VoicePrompt(torch.zeros(base.config.talker.hidden_size * 2))
    with pytest.raises(InputError, match="another model size"):
        base.generate_voice_clone("Hello.", voice, max_frames=3)
