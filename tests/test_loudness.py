"""Output loudness (qwen_tts_core.loudness) on speech-like audio (espeak-ng): every preset reaches its
target within 0.5 LU as pyloudnorm measures the output, the true peak stays under the ceiling as an
independent 8x oversampling (scipy) measures it, a whole track keeps its lines' relative levels,
per-line mode evens them out, and silence, short clips, NaN and other bad input get a clear
message. The piecewise meter is checked against pyloudnorm's own integrated_loudness."""
import math

import numpy as np
import pytest
import torch

from longform_helpers import SR, espeak
from qwen_tts_core import loudness
from qwen_tts_core.errors import InputError

pytestmark = pytest.mark.core

SENTENCES = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
             "How much wood would a woodchuck chuck if a woodchuck could chuck wood?"]
_SPEECH: dict = {}


def speech(i: int) -> torch.Tensor:
    if i not in _SPEECH:
        _SPEECH[i] = espeak(SENTENCES[i])
    return _SPEECH[i]


def dialogue(levels=(1.0, 0.3, 0.6), pause=0.5) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Three lines at different levels (three speakers at their own levels), with pauses."""
    pieces, spans, at = [], [], 0
    for i, level in enumerate(levels):
        line = level * speech(i)
        pieces += [line, torch.zeros(round(pause * SR))]
        spans.append((at, at + line.numel()))
        at += line.numel() + round(pause * SR)
    return torch.cat(pieces), spans


def pyloudnorm_lufs(x: torch.Tensor, rate: int = SR) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(rate).integrated_loudness(x.double().reshape(-1, x.shape[-1]).t().numpy())


def oversampled_peak_db(x: torch.Tensor, factor: int = 8) -> float:
    """True peak measured independently of the code under test: scipy's polyphase resampler."""
    from scipy.signal import resample_poly

    return 20 * math.log10(np.abs(resample_poly(x.double().reshape(-1, x.shape[-1]).numpy(), factor, 1,
                                                axis=-1)).max())


# ----------------------------------------------------------------------------- the meter
def test_the_piecewise_meter_equals_pyloudnorm(monkeypatch):
    track, _ = dialogue()
    whole = pyloudnorm_lufs(track)
    monkeypatch.setattr(loudness, "PIECE_BLOCKS", 23)          # many pieces over a 16 s track
    assert loudness.integrated_loudness(track, SR) == pytest.approx(whole, abs=1e-6)
    stereo = torch.stack([track, 0.5 * track])
    assert loudness.integrated_loudness(stereo, SR) == pytest.approx(pyloudnorm_lufs(stereo), abs=1e-6)


def test_true_peak_finds_the_peak_between_samples():
    # a sine at a quarter of the rate, sampled 45 degrees off its crests: every sample is at
    # 0.707 of the crest, the true peak is the crest itself (3 dB above the sample peak)
    t = torch.arange(SR, dtype=torch.float64)
    fade = torch.ones(SR, dtype=torch.float64)
    fade[:2400] = fade[-2400:] = 0.0                       # no edges to ring at
    fade[2400:4800] = torch.linspace(0, 1, 2400, dtype=torch.float64)
    fade[-4800:-2400] = torch.linspace(1, 0, 2400, dtype=torch.float64)
    x = (0.5 * fade * torch.sin(math.pi / 2 * t + math.pi / 4)).float()
    assert 20 * math.log10(float(x.abs().max())) == pytest.approx(-9.03, abs=0.01)
    assert loudness.true_peak(x, SR) == pytest.approx(20 * math.log10(0.5), abs=0.05)
    # oversampled to at least 192 kHz: 4x at 48 kHz (BS.1770-4 Annex 2), 8x at 24 kHz
    assert [loudness.oversampling(r) for r in (48000, 44100, 24000, 16000, 8000)] == [4, 5, 8, 12, 16]


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", [p for p in loudness.PRESETS if p != "off"])
def test_every_preset_reaches_its_target_under_the_ceiling(preset):
    track, _ = dialogue()
    target = loudness.target_of(preset)
    out = loudness.normalize(track, SR, target)
    assert out.audio.shape == (1, track.numel())
    assert pyloudnorm_lufs(out.audio) == pytest.approx(target, abs=0.5)
    assert out.after == pytest.approx(pyloudnorm_lufs(out.audio), abs=1e-6)
    assert out.before == pytest.approx(pyloudnorm_lufs(track), abs=1e-6)
    assert oversampled_peak_db(out.audio) <= loudness.TRUE_PEAK_CEILING + 0.02
    assert float(out.audio.abs().max()) < 10 ** (loudness.TRUE_PEAK_CEILING / 20)     # no clipping
    assert f"target {target:.0f}" in out.summary()


def test_off_has_no_target_and_an_unknown_preset_is_named():
    assert loudness.target_of("off") is None
    with pytest.raises(InputError, match="Unknown loudness '-18 LUFS'.*-16 LUFS \\(web, podcasts\\)"):
        loudness.target_of("-18 LUFS")


def test_a_lower_ceiling_is_kept():
    track, _ = dialogue()
    out = loudness.normalize(track, SR, -16.0, ceiling=-3.0)
    assert oversampled_peak_db(out.audio) <= -3.0 + 0.02
    assert pyloudnorm_lufs(out.audio) == pytest.approx(-16.0, abs=0.5)


def test_a_whole_track_keeps_its_lines_relative_levels():
    track, spans = dialogue(levels=(0.5, 0.15, 0.3))
    out = loudness.normalize(track, SR, -23.0)
    before = [pyloudnorm_lufs(track[a:b]) for a, b in spans]
    after = [pyloudnorm_lufs(out.audio[0, a:b]) for a, b in spans]
    # one gain for all (a few peaks of the loudest line limited by ~1 dB move it by < 0.1 LU)
    assert [x - before[0] for x in before] == pytest.approx([x - after[0] for x in after], abs=0.15)
    assert before[0] - before[1] == pytest.approx(20 * math.log10(0.5 / 0.15) + pyloudnorm_lufs(speech(0))
                                                  - pyloudnorm_lufs(speech(1)), abs=0.01)


def test_per_line_brings_every_line_to_the_target():
    track, spans = dialogue()
    spread = [pyloudnorm_lufs(track[a:b]) for a, b in spans]
    assert max(spread) - min(spread) > 8                      # the speakers differ a lot
    out = loudness.normalize(track, SR, -16.0, spans=spans)
    for a, b in spans:
        assert pyloudnorm_lufs(out.audio[0, a:b]) == pytest.approx(-16.0, abs=0.5)
    assert out.span_levels == pytest.approx([-16.0] * 3, abs=0.5)
    assert oversampled_peak_db(out.audio) <= loudness.TRUE_PEAK_CEILING + 0.02
    assert "3 lines" in out.summary()


def test_a_line_too_short_to_measure_gets_the_tracks_gain():
    track, spans = dialogue()
    short = (spans[1][0], spans[1][0] + round(0.2 * SR))
    out = loudness.normalize(track, SR, -23.0, spans=[spans[0], short, spans[2]])
    gain = out.audio[0, short[0]:short[1]].abs().max() / track[short[0]:short[1]].abs().max()
    assert 20 * math.log10(float(gain)) == pytest.approx(-23.0 - out.before, abs=0.3)
    assert math.isnan(out.span_levels[1]) and "line(s) 2: too short" in out.summary()


def test_stereo_channels_get_the_same_gain():
    track, _ = dialogue()
    stereo = torch.stack([track, 0.5 * track])
    out = loudness.normalize(stereo, SR, -23.0)
    assert torch.allclose(out.audio[1], 0.5 * out.audio[0], atol=1e-6)
    assert pyloudnorm_lufs(out.audio) == pytest.approx(-23.0, abs=0.5)


# ----------------------------------------------------------------------------- the limiter
def test_the_limiter_never_lets_a_block_exceed_the_ceiling():
    g = torch.Generator().manual_seed(0)
    peaks = torch.rand(5000, generator=g) ** 8 * 4               # sparse peaks far over the ceiling
    gain = loudness.limiter_gains(peaks, 0.9, 20)
    assert bool((gain * peaks <= 0.9 + 1e-6).all())
    assert float(gain.max()) <= 1.0 and float(gain.min()) < 0.3
    # and it is smooth: the ramps take 20 blocks, a step between blocks stays small
    assert float((gain[1:] - gain[:-1]).abs().max()) < 0.1


# ----------------------------------------------------------------------------- bad input
def test_silence_is_refused_with_a_message():
    with pytest.raises(InputError, match="silent .*-70 LUFS.*no loudness to normalise"):
        loudness.normalize(torch.zeros(SR * 2), SR, -16.0)
    with pytest.raises(InputError, match="silent"):
        loudness.normalize(1e-5 * torch.ones(SR * 2), SR, -16.0)      # a DC offset far below the gate


def test_a_clip_shorter_than_a_block_is_refused_with_a_message():
    with pytest.raises(InputError, match="is 300 ms long: too short to measure.*400 ms blocks"):
        loudness.normalize(speech(0)[: round(0.3 * SR)], SR, -16.0)
    assert loudness.normalize(speech(0)[: round(0.4 * SR)], SR, -23.0).audio.shape == (1, round(0.4 * SR))


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "1 NaN/inf samples"), (float("inf"), "1 NaN/inf samples")])
def test_damaged_audio_is_refused(bad, message):
    track = speech(0).clone()
    track[100] = bad
    with pytest.raises(InputError, match=message):
        loudness.normalize(track, SR, -16.0)


@pytest.mark.parametrize("audio, rate, target, message", [
    ([0.1] * SR, SR, -16.0, "must be a tensor, got list"),
    (torch.zeros(1, 1, 1, SR), SR, -16.0, "expected \\[samples\\] or \\[channels, samples\\]"),
    (torch.zeros(6, SR), SR, -16.0, "6 channels"),
    (torch.zeros(SR, dtype=torch.bool), SR, -16.0, "torch.bool samples"),
    (torch.zeros(SR, dtype=torch.int16), SR, -16.0, "torch.int16 samples; expected float audio"),
    (torch.zeros(SR), 0, -16.0, "no plausible sample rate"),
    (torch.zeros(SR), "24000", -16.0, "no plausible sample rate"),
    (torch.ones(SR), SR, -60.0, "between -40 and -5 LUFS"),
    (torch.ones(SR), SR, "-16", "between -40 and -5 LUFS"),
])
def test_wrong_input_is_named(audio, rate, target, message):
    with pytest.raises(InputError, match=message):
        loudness.normalize(audio, rate, target)


def test_a_ceiling_out_of_range_and_bad_spans_are_named():
    track, spans = dialogue()
    with pytest.raises(InputError, match="ceiling must be between -20 and 0 dBTP"):
        loudness.normalize(track, SR, -16.0, ceiling=1.0)
    with pytest.raises(InputError, match="Line spans overlap"):
        loudness.normalize(track, SR, -16.0, spans=[(0, 1000), (500, 2000)])
    with pytest.raises(InputError, match="must be \\(start, end\\)"):
        loudness.normalize(track, SR, -16.0, spans=[5])


def test_an_interrupt_stops_it_and_leaves_the_input_alone():
    track, _ = dialogue()
    kept = track.clone()
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loudness.normalize(track, SR, -16.0, check_interrupt=check)
    assert torch.equal(track, kept)


@pytest.mark.slow
def test_a_long_track_is_normalised_in_pieces():
    """20 minutes of speech: pyloudnorm on the whole would hold ~24 bytes per sample (690 MB);
    piecewise, the output buffer (4 bytes per sample) is most of what is added. Measured in a
    fresh process: after hundreds of other tests, this one's heap is fragmented enough to add
    its own noise to a peak-memory figure."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    code = f"""
import json, math, sys
sys.path[:0] = [{str(tests)!r}, {str(tests.parent)!r}]
from test_loudness import dialogue
from longform_helpers import SR, peak_growth_mb
from qwen_tts_core import loudness
track, _ = dialogue()
long = track.repeat(math.ceil(20 * 60 * SR / track.numel()))[: 20 * 60 * SR]
grown, out = peak_growth_mb(lambda: loudness.normalize(long, SR, -16.0))
print("GROWTH " + json.dumps(dict(grown=grown, after=out.after, size_mb=long.numel() * 4 / 2 ** 20)))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("GROWTH ")), None)
    assert line, run.stderr[-2000:]
    seen = json.loads(line[7:])
    grown, size_mb = seen["grown"], seen["size_mb"]
    assert seen["after"] == pytest.approx(-16.0, abs=0.5)
    assert grown < 2.5 * size_mb, f"{grown:.0f} MB grown for a {size_mb:.0f} MB track"
