"""Host time per frame of the generation loop: the frame step is replaced by a no-op, so what
is left is the work the host does around it (launching, reading results back, the loop, the
consumer's bookkeeping). On a GPU the replayed graph runs in parallel with it; the loop can
be no faster than this. Target (issue: fast path): at most 0.3 ms per frame at batch 1.

    python bench/host_overhead.py                      # CPU, the tiny test model
    python bench/host_overhead.py --device cuda        # on a GPU (a graph replay is a no-op too)

Writes bench/results/host-overhead-<device>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from qwen_tts_core import generate  # noqa: E402
from qwen_tts_core.api import QwenTTS  # noqa: E402


def per_frame_ms(tts: QwenTTS, batch: int, frames: int, repeats: int) -> list[float]:
    texts = [f"Line number {i} of the batch, with a few words." for i in range(batch)]
    times = []
    for _ in range(repeats):
        stamps = []
        tts.generate_custom_voice(texts, "ryan", max_frames=frames, seed=1,
                                  on_frame=lambda i, frame: stamps.append(time.perf_counter()))
        times.append((stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    tts = QwenTTS.from_pretrained(ROOT / "tests" / "fixtures" / "models" / "qwen-tts" / "Tiny-CustomVoice",
                                  dtype="fp32", device=args.device, speech_tokenizer=False)
    # the step does nothing: no end of speech, so every generation runs `frames` frames
    generate.FrameStep.step = lambda self, t=None: None
    if args.device.startswith("cuda"):
        generate.GraphedStep.__call__ = lambda self, t=None: None
    rows = []
    for batch in map(int, args.batches.split(",")):
        per_frame_ms(tts, batch, 50, 1)                        # warm-up
        times = per_frame_ms(tts, batch, args.frames, args.repeats)
        rows.append(dict(batch=batch, frames=args.frames, ms_per_frame_median=statistics.median(times),
                         ms_per_frame_all=times))
        print(f"batch {batch}: {statistics.median(times):.4f} ms host time per frame "
              f"(median of {args.repeats} runs of {args.frames} frames)", flush=True)
    meta = dict(device=args.device, machine=f"{platform.processor() or platform.machine()}",
                torch=torch.__version__, python=platform.python_version(), threads=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"host-overhead-{args.device.replace(':', '')}"
    (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    lines = [f"# Host time per frame ({args.device}, step replaced by a no-op)", "",
             f"- torch {meta['torch']}, {meta['machine']}, 1 thread", "",
             "| batch | frames | ms per frame (median) |", "|---|---|---|"]
    lines += [f"| {r['batch']} | {r['frames']} | {r['ms_per_frame_median']:.4f} |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
