"""Stand-ins and measurements for the long-form tests: speakers that make known audio (a tone
whose length follows the text, or espeak-ng speech), a cheap stand-in for the codec's decode, an
onset measure independent of the one under test, and peak-memory measurement."""
import ctypes
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import unavailable
from qwen_tts_core.audio import prepare, read_wav
from qwen_tts_core.duration import expected_seconds
from qwen_tts_core.longform.synthesis import ChunkReport, Take

SR = 24000


_SECOND_OF_TONE: dict = {}


def tone(seconds: float, freq: float = 220.0, amp: float = 0.3) -> torch.Tensor:
    """A sine tone; whole-hertz tones repeat every second, so one second is made and tiled."""
    if freq not in _SECOND_OF_TONE:
        t = torch.arange(SR, dtype=torch.float64) / SR
        _SECOND_OF_TONE[freq] = torch.sin(2 * math.pi * freq * t).float()
    n = round(seconds * SR)
    return amp * _SECOND_OF_TONE[freq].repeat(n // SR + 1)[:n]


class ToneSpeaker:
    """Says a text as a tone as long as the text's expected duration, between `lead` and
    `tail` seconds of faint noise (-66 dBFS, like a real take's room tone)."""

    def __init__(self, language="english", lead=0.3, tail=0.4, freq=220.0, scale=1.0, seed=0):
        self.language, self.lead, self.tail, self.freq, self.scale = language, lead, tail, freq, scale
        self.spoken: list[str] = []
        self.styles: list = []
        self.generator = torch.Generator().manual_seed(seed)
        self._noise = torch.zeros(0)

    def speak(self, text, style=None):
        self.spoken.append(text)
        self.styles.append(style)
        seconds = expected_seconds(text, self.language) * self.scale
        n = round((self.lead + seconds + self.tail) * SR)
        if n > self._noise.numel():        # faint noise, made once and reused (fast for long texts)
            self._noise = 5e-4 * torch.randn(n, generator=self.generator)
        audio = torch.cat([torch.zeros(round(self.lead * SR)), tone(seconds, self.freq),
                           torch.zeros(round(self.tail * SR))])
        audio += self._noise[: audio.numel()]
        return Take(audio, torch.zeros(0, 16, dtype=torch.long), None,
                    ChunkReport(len(self.spoken) - 1, text, seconds=audio.numel() / SR))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str = "en") -> torch.Tensor:
    """espeak-ng speech at 24 kHz (mono float32)."""
    if not espeak_available():
        unavailable("espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")
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
    """Codes -> audio, far cheaper than the codec (for loops of many chunks): 1920 samples per frame of a 200 Hz tone whose
    loudness follows codebook 0 (so different codes give different audio)."""
    out = []
    for codes in codes_list:
        amp = 0.05 + 0.25 * (codes[:, 0] % 7).float() / 6
        t = torch.arange(codes.shape[0] * 1920) / SR
        out.append(amp.repeat_interleave(1920) * torch.sin(2 * math.pi * 200 * t))
    return out


def measured_onsets(track: torch.Tensor, near: list[float], search=(-0.4, 0.8),
                    level: float = 3e-3) -> list[float]:
    """Speech onsets measured the plain way: the first sample, in a window around each expected
    time, where the 2 ms mean amplitude exceeds -50 dBFS (ten times the takes' noise floor,
    below any speech sound, fricatives included)."""
    env = torch.nn.functional.avg_pool1d(track.abs()[None, None], 48, 1, padding=24)[0, 0]
    out = []
    for t in near:
        a, b = max(0, round((t + search[0]) * SR)), min(track.numel(), round((t + search[1]) * SR))
        above = torch.nonzero(env[a:b] >= level).flatten()
        out.append((a + int(above[0])) / SR if above.numel() else float("nan"))
    return out


def rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _return_freed_memory_to_the_system() -> None:
    """glibc keeps freed heap memory and reuses it, so a leak could hide in memory freed
    earlier. A fixed mmap threshold makes every buffer over 128 kB (any audio chunk) its own
    mapping, returned on free: resident memory then follows the live buffers. (Process-wide
    for the rest of the test session: glibc's default threshold, without its upward drift.)"""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("not glibc: cannot make resident memory follow live buffers")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)


def peak_growth_mb(fn) -> tuple[float, object]:
    """Peak resident memory while `fn()` runs, above the resident memory before it (Linux:
    the peak is reset through /proc/self/clear_refs)."""
    _return_freed_memory_to_the_system()
    path = Path("/proc/self/clear_refs")
    try:
        path.write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak-memory counter here (/proc/self/clear_refs)")
    before = rss_kb()
    result = fn()
    return (rss_kb("VmHWM") - before) / 1024, result
