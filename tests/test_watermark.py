"""The AudioSeal watermark's wiring (qwen_tts_core.watermark). The published weights cannot be
downloaded here, so these tests use the audioseal package's own architecture with random weights
(or stand-ins that record what they are given): the 16 kHz round trip, lengths, channels,
windows, message bits, interrupt, bad input; loading a checkpoint in the published layout
weights-only; the sha256 check; the download through a local Hub stand-in (tests/hub_server.py).
Whether the real detector finds the real generator's mark is not measured here."""
import collections
import hashlib
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hub_server import FakeHub, closed_port_endpoint
from qwen_tts_core import watermark as wm
from qwen_tts_core.errors import DownloadError, InputError, ModelFolderError

pytestmark = pytest.mark.core

SR = 24000


def noise(seconds: float, rate: int = SR, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(channels, round(seconds * rate), generator=g)


_MODELS: dict = {}


def models():
    """The package's generator and detector with random weights (made once)."""
    if not _MODELS:
        torch.manual_seed(0)
        _MODELS["generator"], _MODELS["detector"] = wm.new_generator(), wm.new_detector()
    return _MODELS["generator"], _MODELS["detector"]


class RecordingGenerator(torch.nn.Module):
    """Stands in for AudioSeal's generator: remembers its input and message, marks with 0.01 * ones."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def get_watermark(self, x, message=None):
        self.seen.append((x.clone(), message.clone()))
        return torch.full_like(x, 0.01)


class FixedDetector(torch.nn.Module):
    """Stands in for AudioSeal's detector: the first `marked` share of each input scores 0.9,
    the rest 0.1; the bits are those of `message`, each at probability 0.8."""

    def __init__(self, message: int, marked: float = 1.0):
        super().__init__()
        self.bits, self.marked, self.seen = wm.message_bits(message).float(), marked, []

    def forward(self, x):
        self.seen.append(x.clone())
        scores = torch.full((x.shape[0], 2, x.shape[-1]), 0.1)
        scores[:, 1, : round(self.marked * x.shape[-1])] = 0.9
        return scores, (0.2 + 0.6 * self.bits).repeat(x.shape[0], 1)


# ----------------------------------------------------------------------------- messages
@pytest.mark.parametrize("message", [0, 1, 0x5154, 0x8000, 0xFFFF, 12345])
def test_a_message_survives_bits_and_back(message):
    bits = wm.message_bits(message)
    assert bits.shape == (16,) and set(bits.tolist()) <= {0, 1}
    assert wm.bits_message(bits.tolist()) == message
    assert "".join(map(str, bits.tolist())) == f"{message:016b}"          # most significant first


@pytest.mark.parametrize("bad", [-1, 65536, 1.5, True, "12", None])
def test_a_message_out_of_range_is_refused(bad):
    with pytest.raises(InputError, match="whole number from 0 to 65535"):
        wm.message_bits(bad)


# ----------------------------------------------------------------------------- embed
def test_the_generator_gets_16_khz_audio_and_the_message_bits():
    rec = RecordingGenerator()
    x = noise(3.0)
    wm.Watermarker(rec).embed(x, SR, 0x5154)
    (seen, message), = rec.seen
    import torchaudio.functional as AF

    assert seen.shape == (1, 1, 3 * 16000)
    assert torch.allclose(seen[:, 0], AF.resample(x, SR, 16000), atol=1e-6)
    assert message.tolist() == [wm.message_bits(0x5154).tolist()]


def test_windows_cover_the_audio_and_overlap_by_the_crossfade():
    spans = wm.windows(1000, 300, 50)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
        assert b0 - a1 == 50 and b0 - a0 == 300
    assert wm.windows(300, 300, 50) == [(0, 300)]
    assert all(b - a > 50 for a, b in spans)


def test_long_audio_is_marked_window_by_window_with_crossfades(monkeypatch):
    monkeypatch.setattr(wm, "WINDOW_SECONDS", 2.0)
    monkeypatch.setattr(wm, "CROSSFADE_SECONDS", 0.5)
    rec = RecordingGenerator()
    x = noise(7.3)
    out = wm.Watermarker(rec).embed(x, SR, 7)
    assert len(rec.seen) == math.ceil((7.3 - 0.5) / 1.5)
    assert max(x.shape[-1] for x, _ in rec.seen) == 2 * 16000     # memory follows the window, not the clip
    added = (out - x)[0]
    inner = added[SR // 10: -SR // 10]                # away from the clip's own two ends
    # the crossfaded windows add up to the mark everywhere, across every window boundary
    assert float((inner - 0.01).abs().max()) < 2e-4, float((inner - 0.01).abs().max())


def test_the_mark_keeps_rate_length_channels_and_stays_below_8_khz():
    generator, _ = models()
    for rate, channels, seconds in ((SR, 1, 1.5), (44100, 2, 1.0), (16000, 1, 1.0)):
        x = noise(seconds, rate, channels) + 1e-3           # odd lengths too
        x = x[..., :-1]
        out = wm.Watermarker(generator).embed(x, rate, 0x5154)
        assert out.shape == x.shape and out.dtype == torch.float32
        added = out - x
        assert float(added.abs().max()) > 1e-4                 # something was added
        spectrum = torch.fft.rfft(added, dim=-1).abs() ** 2
        freqs = torch.fft.rfftfreq(added.shape[-1], 1 / rate)
        above = float(spectrum[..., freqs > 8200].sum() / spectrum.sum())
        assert above < 1e-3, (rate, above)                     # what 16 kHz can carry
    one = noise(1.0)[0]
    assert wm.Watermarker(generator).embed(one, SR).shape == one.shape     # [T] in, [T] out


def test_the_message_changes_the_mark():
    generator, _ = models()
    x = noise(1.0)
    a, b = (wm.Watermarker(generator).embed(x, SR, m) for m in (0x0000, 0xFFFF))
    assert not torch.allclose(a, b)
    assert torch.equal(wm.Watermarker(generator).embed(x, SR, 0x0000), a)       # and nothing else


# ----------------------------------------------------------------------------- detect
def test_detection_reads_the_score_and_the_message_over_all_windows(monkeypatch):
    monkeypatch.setattr(wm, "WINDOW_SECONDS", 2.0)
    det = FixedDetector(0xBEEF, marked=0.75)
    found = wm.Watermarker(detector=det).detect(noise(6.0), SR)
    assert len(det.seen) == 3 and det.seen[0].shape[1:] == (1, 3 * 16000)   # window + 1 s context
    assert found.message == 0xBEEF and found.bit_confidence == pytest.approx(0.6, abs=1e-6)
    assert 0 < found.score < 1 and found.seconds == pytest.approx(6.0)
    assert "0xBEEF" in found.summary() and found.watermarked == (found.score > 0.5)


def test_no_mark_is_reported_as_none():
    found = wm.Watermarker(detector=FixedDetector(3, marked=0.0)).detect(noise(2.0), SR)
    assert found.score == 0.0 and not found.watermarked
    assert found.summary().startswith("No AudioSeal watermark found: 0% of 2.0 s")


def test_the_real_detector_architecture_runs_on_any_rate():
    generator, detector = models()
    for rate in (SR, 16000, 44100):
        x = wm.Watermarker(generator).embed(noise(1.2, rate), rate)
        found = wm.Watermarker(detector=detector).detect(x, rate)
        assert 0.0 <= found.score <= 1.0 and 0 <= found.message < 65536
        assert found.seconds == pytest.approx(1.2, abs=1e-3)


def test_the_best_channel_is_reported():
    class ChannelTwoMarked(FixedDetector):
        def forward(self, x):
            scores, bits = super().forward(x)
            scores[0, 1] = 0.1
            return scores, bits

    found = wm.Watermarker(detector=ChannelTwoMarked(5)).detect(noise(1.0, channels=2), SR)
    assert found.channel == 1 and found.score == 1.0


# ----------------------------------------------------------------------------- bad input, interrupt
@pytest.mark.parametrize("audio, rate, message", [
    ([0.0] * 100, SR, "must be a tensor, got list"),
    (torch.zeros(SR, dtype=torch.int16), SR, "torch.int16 samples"),
    (torch.zeros(1, 1, 1, SR), SR, "expected \\[samples\\] or \\[channels, samples\\]"),
    (torch.zeros(1, 0), SR, "expected \\[samples\\]"),
    (torch.zeros(SR), 0, "no plausible sample rate"),
    (torch.tensor([0.0, float("nan"), 0.0]), SR, "1 NaN/inf samples"),
])
def test_bad_audio_is_named(audio, rate, message):
    with pytest.raises(InputError, match=message):
        wm.Watermarker(RecordingGenerator()).embed(audio, rate)
    with pytest.raises(InputError, match=message.replace("to watermark", "to check")):
        wm.Watermarker(detector=FixedDetector(0)).detect(audio, rate)


def test_an_interrupt_between_windows_stops_it(monkeypatch):
    monkeypatch.setattr(wm, "WINDOW_SECONDS", 2.0)
    rec, calls = RecordingGenerator(), []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    x = noise(6.0)
    kept = x.clone()
    with pytest.raises(KeyboardInterrupt):
        wm.Watermarker(rec).embed(x, SR, check_interrupt=check)
    assert len(rec.seen) == 1 and torch.equal(x, kept)
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        wm.Watermarker(detector=FixedDetector(0)).detect(x, SR, check_interrupt=check)


def test_a_missing_model_is_said():
    with pytest.raises(InputError, match="No watermark generator"):
        wm.Watermarker(detector=FixedDetector(0)).embed(noise(1.0), SR)
    with pytest.raises(InputError, match="No watermark detector"):
        wm.Watermarker(RecordingGenerator()).detect(noise(1.0), SR)


# ----------------------------------------------------------------------------- weights on disk
def published_layout(model, path: Path) -> None:
    """A checkpoint laid out as the published ones are (their pickle imports, as the Hub lists
    them: omegaconf containers and tensors): {'xp.cfg': DictConfig, 'model': state dict with
    weight-normed convolutions (weight_g, weight_v) under the names the package converts from}."""
    from omegaconf import OmegaConf

    sd = collections.OrderedDict()
    for k, v in model.state_dict().items():
        if k.endswith(".inner_conv.weight"):
            base = k[: -len(".inner_conv.weight")]
            sd[base + ".weight_g"] = v.norm(dim=(1, 2), keepdim=True)
            sd[base + ".weight_v"] = v
        else:
            sd[k.replace(".inner_conv.", ".")] = v
    cfg = OmegaConf.create({"seanet": {"dimension": 128, "ratios": [8, 5, 4, 2]}, "sample_rate": 16000, "x": None})
    torch.save({"xp.cfg": cfg, "model": sd}, path)


def pin(monkeypatch, folder: Path) -> None:
    """Pins the weight files' hashes and sizes to those in `folder` (the test's stand-ins)."""
    pinned = []
    for w in wm.WEIGHTS:
        data = (folder / w.filename).read_bytes()
        pinned.append(replace(w, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    monkeypatch.setattr(wm, "GENERATOR", pinned[0])
    monkeypatch.setattr(wm, "DETECTOR", pinned[1])
    monkeypatch.setattr(wm, "WEIGHTS", tuple(pinned))


def test_the_published_layout_loads_weights_only(tmp_path, monkeypatch):
    generator, detector = models()
    published_layout(generator, tmp_path / wm.GENERATOR.filename)
    published_layout(detector, tmp_path / wm.DETECTOR.filename)
    pin(monkeypatch, tmp_path)
    for loaded, original in ((wm.load_generator(tmp_path), generator), (wm.load_detector(tmp_path), detector)):
        a, b = loaded.state_dict(), original.state_dict()
        assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    x = noise(1.0)
    assert torch.allclose(wm.Watermarker(wm.load_generator(tmp_path)).embed(x, SR),
                          wm.Watermarker(generator).embed(x, SR), atol=1e-5)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    generator, detector = models()
    published_layout(detector, tmp_path / wm.DETECTOR.filename)
    torch.save({"model": generator.state_dict(), "trap": Payload()}, tmp_path / wm.GENERATOR.filename)
    pin(monkeypatch, tmp_path)              # even a file whose hash is trusted is read weights-only
    with pytest.raises(ModelFolderError, match="cannot be read as an AudioSeal checkpoint"):
        wm.load_generator(tmp_path)


def test_a_file_that_is_not_the_published_one_is_refused(tmp_path):
    for w in wm.WEIGHTS:
        (tmp_path / w.filename).write_bytes(b"not the weights")
    with pytest.raises(ModelFolderError, match=f"not the published AudioSeal generator_base.pth: its sha256 is "
                                               f"{hashlib.sha256(b'not the weights').hexdigest()}, the Hub lists "
                                               f"{wm.GENERATOR.sha256}.*hf download facebook/audioseal"):
        wm.load_generator(tmp_path)


def test_missing_weights_say_what_to_do(tmp_path):
    (tmp_path / wm.GENERATOR.filename).write_bytes(b"x")
    with pytest.raises(wm.WatermarkWeightsMissing, match=f"not in {tmp_path} \\(missing: detector_base.pth\\). "
                                                         "Choose the entry. Or download them \\(93 MB\\) by hand: "
                                                         "hf download facebook/audioseal generator_base.pth "
                                                         "detector_base.pth"):
        wm.check_present(tmp_path, "Choose the entry. ")
    assert wm.missing(tmp_path / "nowhere") == ["generator_base.pth", "detector_base.pth"]


# ----------------------------------------------------------------------------- download
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hub stand-in holding facebook/audioseal with two small stand-in weight files."""
    from huggingface_hub import constants

    repo = tmp_path / "repo"
    repo.mkdir()
    for i, w in enumerate(wm.WEIGHTS):
        (repo / w.filename).write_bytes(os.urandom(300_000 + i))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub({wm.REPO: repo}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
        h.repo = repo
        yield h


def test_the_weights_download_with_their_hashes_checked(hub, tmp_path, monkeypatch):
    pin(monkeypatch, hub.repo)
    seen = []
    folder = wm.download(tmp_path / "audioseal", on_progress=lambda d, t: seen.append((d, t)))
    for w in wm.WEIGHTS:
        assert (folder / w.filename).read_bytes() == (hub.repo / w.filename).read_bytes()
    assert sorted(os.listdir(folder)) == ["detector_base.pth", "generator_base.pth"]      # no staging left
    total = sum(w.size for w in wm.WEIGHTS)
    assert seen[-1] == (total, total) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    hub.log.clear()
    assert wm.download(folder) == folder and hub.log == []          # there: no network at all


def test_a_file_other_than_the_published_one_is_refused(hub, tmp_path):
    # the real pinned hashes: the stand-in files are not the published ones
    with pytest.raises(DownloadError, match="generator_base.pth arrived from facebook/audioseal but is not the "
                                            "published file.*deleted"):
        wm.download(tmp_path / "audioseal")
    assert not (tmp_path / "audioseal" / "generator_base.pth").exists()
    assert wm.missing(tmp_path / "audioseal") == ["generator_base.pth", "detector_base.pth"]


def test_offline_gives_the_manual_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set.*hf download facebook/audioseal "
                                            "generator_base.pth detector_base.pth --local-dir"):
        wm.download(tmp_path / "audioseal")


def test_a_server_that_is_down_gives_the_manual_command(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_endpoint())
    with pytest.raises(DownloadError, match="Cannot download the AudioSeal watermark weights.*offline.*"
                                            "hf download facebook/audioseal"):
        wm.download(tmp_path / "audioseal")


def test_too_little_disk_space_is_said_before_downloading(hub, tmp_path, monkeypatch):
    import shutil

    pin(monkeypatch, hub.repo)                         # 600 kB in all
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match="need 1 MB on the disk of .*audioseal, which has 0 MB free"):
        wm.download(tmp_path / "audioseal")
    assert hub.requests("GET", "/resolve/") == []


def test_a_full_disk_while_downloading_is_said(hub, tmp_path, monkeypatch):
    import huggingface_hub

    pin(monkeypatch, hub.repo)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", full)
    with pytest.raises(DownloadError, match="filled up while downloading generator_base.pth.*free some space"):
        wm.download(tmp_path / "audioseal")


def test_an_interrupt_stops_the_download(hub, tmp_path, monkeypatch):
    pin(monkeypatch, hub.repo)

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wm.download(tmp_path / "audioseal", check_interrupt=stop)
    assert wm.missing(tmp_path / "audioseal") == ["generator_base.pth", "detector_base.pth"]
