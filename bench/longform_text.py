"""Speed of the long-form text path (no model): chunking 1 MB of text, and the narration loop
streaming 100 kB of text to a WAV file with an instant speaker. Prints seconds and the 1 MB /
250 kB ratio (about 4 for linear work). The tests check what these produce, not how fast.

    .venv/bin/python bench/longform_text.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_tts_core.longform import WavSink, narrate  # noqa: E402
from qwen_tts_core.longform.text import chunk_text  # noqa: E402


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(1)
    base = ("Mr. Smith paid $3.14 for it. Then he left... \"Stop!\" she said, and J. R. R. Tolkien "
            "wrote e.g. this; it was No. 5 on the list.\n\n")
    big = (base * (1_000_000 // len(base) + 1))[:1_000_000]
    whole, quarter = seconds(lambda: chunk_text(big, "english")), seconds(lambda: chunk_text(big[:250_000], "english"))
    print(f"chunk_text: 1 MB {whole:.2f} s, 250 kB {quarter:.2f} s, ratio {whole / quarter:.1f} (4 = linear)")
    flat = seconds(lambda: chunk_text("word " * 200_000, "english"))
    print(f"chunk_text: 1 MB without punctuation {flat:.2f} s")

    class Instant:                               # the same 0.1 s take for every chunk: the loop alone
        language = "english"
        take = None

        def speak(self, text, style=None):
            if Instant.take is None:
                from qwen_tts_core.longform.synthesis import ChunkReport, Take
                Instant.take = Take(torch.zeros(2400), torch.zeros(0, 16, dtype=torch.long), None,
                                    ChunkReport(0, text, seconds=0.1))
            return Instant.take

    with tempfile.TemporaryDirectory() as tmp:
        t = seconds(lambda: narrate(big[:100_000], Instant(), sink=WavSink(Path(tmp) / "book.wav")))
    print(f"narrate: 100 kB streamed to a WAV file in {t:.1f} s (loop overhead)")


if __name__ == "__main__":
    main()
