"""Stand-ins and measurements for the long-form tests: speakers that make known audio (a tone
whose length follows the text, or espeak-ng speech), a decode function for codes until the codec
lands, an onset measure independent of the one under test, and peak-memory measurement."""
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from qwen_tts_core.audio import prepare, read_wav
from qwen_tts_core.duration import expected_seconds
from qwen_tts_core.longform.synthesis import ChunkReport, Take

SR = 24000


def tone(seconds: float, freq: float = 220.0, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    return amp * torch.sin(2 * math.pi * freq * t)


class ToneSpeaker:
    """Says a text as a tone as long as the text's expected duration, between `lead` and
    `tail` seconds of faint noise (-66 dBFS, like a real take's room tone)."""

    def __init__(self, language="english", lead=0.3, tail=0.4, freq=220.0, scale=1.0, seed=0):
        self.language, self.lead, self.tail, self.freq, self.scale = language, lead, tail, freq, scale
        self.spoken: list[str] = []
        self.styles: list = []
        self.generator = torch.Generator().manual_seed(seed)

    def speak(self, text, style=None):
        self.spoken.append(text)
        self.styles.append(style)
        seconds = expected_seconds(text, self.language) * self.scale
        audio = torch.cat([torch.zeros(round(self.lead * SR)), tone(seconds, self.freq),
                           torch.zeros(round(self.tail * SR))])
        audio += 5e-4 * torch.randn(audio.shape, generator=self.generator)
        return Take(audio, torch.zeros(0, 16, dtype=torch.long), None,
                    ChunkReport(len(self.spoken) - 1, text, seconds=audio.numel() / SR))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str = "en") -> torch.Tensor:
    """espeak-ng speech at 24 kHz (mono float32)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        wav, rate = read_wav(path)
    return prepare(wav, rate)


class EspeakSpeaker:
    """Real speech from espeak-ng, with a random lead-in of near-silence (as a TTS take has)."""

    def __init__(self, voice="en", language="english", seed=0):
        self.voice, self.language = voice, language
        self.generator = torch.Generator().manual_seed(seed)
        self.leads: list[float] = []

    def speak(self, text, style=None):
        lead = float(torch.rand((), generator=self.generator)) * 0.5 + 0.1
        self.leads.append(lead)
        speech = espeak(text, self.voice)
        audio = torch.cat([torch.zeros(round(lead * SR)), speech, torch.zeros(round(0.3 * SR))])
        audio += 3e-4 * torch.randn(audio.shape, generator=self.generator)
        return Take(audio, torch.zeros(0, 16, dtype=torch.long), None,
                    ChunkReport(len(self.leads) - 1, text, seconds=audio.numel() / SR))


def fake_decode(codes_list, voices):
    """Codes -> audio until the real codec lands: 1920 samples per frame of a 200 Hz tone whose
    loudness follows codebook 0 (so different codes give different audio)."""
    out = []
    for codes in codes_list:
        amp = 0.05 + 0.25 * (codes[:, 0] % 7).float() / 6
        t = torch.arange(codes.shape[0] * 1920) / SR
        out.append(amp.repeat_interleave(1920) * torch.sin(2 * math.pi * 200 * t))
    return out


def measured_onsets(track: torch.Tensor, near: list[float], search=(-0.4, 0.8)) -> list[float]:
    """Speech onsets measured the simple way: the first sample, in a window around each
    expected time, where the 2 ms envelope exceeds 5 % of the window's peak envelope."""
    env = torch.nn.functional.avg_pool1d(track.abs()[None, None], 48, 1, padding=24)[0, 0]
    out = []
    for t in near:
        a, b = max(0, round((t + search[0]) * SR)), min(track.numel(), round((t + search[1]) * SR))
        window = env[a:b]
        above = torch.nonzero(window >= 0.05 * window.max()).flatten()
        out.append((a + int(above[0])) / SR)
    return out


def rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_growth_mb(fn) -> tuple[float, object]:
    """Peak resident memory while `fn()` runs, above the resident memory before it (Linux:
    the peak is reset through /proc/self/clear_refs)."""
    path = Path("/proc/self/clear_refs")
    try:
        path.write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak-memory counter here (/proc/self/clear_refs)")
    before = rss_kb()
    result = fn()
    return (rss_kb("VmHWM") - before) / 1024, result
