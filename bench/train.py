"""Fine-tuning speed and memory: optimizer steps per second and peak memory of the training
loop (`qwen_tts_core.finetune.train`), per model size and method, each in a fresh process, next
to the memory estimate that training checks before it starts. Writes bench/results/train-<device>.{json,md}.

    python bench/train.py --device cpu --sizes tiny,0.6B --methods full,lora --frames 25 --steps 3
    python bench/train.py --device cuda --sizes 0.6B,1.7B --methods full,lora --frames 125 --steps 20

Weights: the Tiny-Base fixture, or real-size random Base checkpoints written here with our own
modules (bench/.cache/, no official package needed; the speech tokenizer is the tiny one, as the
codes are random). One item per step: `--frames` frames of random codes and a sentence of text.
The run stops after warm-up + `--steps` steps, before any checkpoint is written.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TINY = ROOT / "tests" / "fixtures" / "models" / "qwen-tts" / "Tiny-Base"
TEXT = "The quick brown fox jumps over the lazy dog, while the evening news reports sun."
WARMUP = 1


def base_folder(size: str, device: str = "cpu") -> Path:
    """Tiny-Base, or a real-size random Base checkpoint (written once, its weights drawn on
    `device`: seconds on a GPU)."""
    if size == "tiny":
        return TINY
    folder = HERE / ".cache" / f"Qwen3-TTS-{size}-Base-random"
    if (folder / "model.safetensors").exists():
        return folder
    import torch

    import official_oracle as oracle
    from bench.worker import REAL
    from qwen_tts_core.config import ModelConfig
    from qwen_tts_core.speaker import SpeakerEncoder
    from qwen_tts_core.talker import Qwen3TTS

    print(f"writing random {size} Base weights to {folder} ...", flush=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = oracle.model_config("base", size.lower().replace(".", "b"), **REAL[size])
    c = ModelConfig.from_dict(config)
    with torch.device("meta"):
        model = Qwen3TTS(c.talker, SpeakerEncoder(c.speaker_encoder))
    state = oracle.random_state(model, 7, device)
    oracle.save_state_dict(state, tmp / "model.safetensors")
    del model, state
    oracle.write_json(tmp / "config.json", config)
    oracle.write_json(tmp / "generation_config.json", oracle.GENERATION_CONFIG)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(TINY / name, tmp / name)
    shutil.copytree(TINY / "speech_tokenizer", tmp / "speech_tokenizer")
    os.rename(tmp, folder)
    return folder


def memory_now(device: str, key: str = "VmHWM") -> float:
    """GiB: the allocator's peak on CUDA; on CPU the process's peak (VmHWM) or current (VmRSS) resident set."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def measure(args) -> dict:
    import torch

    from qwen_tts_core.audio import read_wav
    from qwen_tts_core.errors import Interrupted
    from qwen_tts_core.finetune import Item, TrainConfig, train
    from qwen_tts_core.finetune.trainer import memory_needed
    from qwen_tts_core.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    base = base_folder(args.size, args.device)
    codes = torch.randint(0, 2048, (args.frames, 16), generator=torch.Generator().manual_seed(0))
    items = [Item(TEXT, codes)] * (WARMUP + args.steps + 1)
    cfg = TrainConfig("bench", epochs=1, method=args.method, learning_rate=1e-5,
                      gradient_checkpointing=args.checkpointing, optimizer=args.optimizer)
    ref = read_wav(ROOT / "tests" / "fixtures" / "audio" / "ref_en.wav")
    _, estimate = memory_needed(base, items, cfg, resolve_device(args.device))
    stamps, steps = [], []

    def on_progress(p):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    def should_stop():
        steps.append(1)
        return len(steps) > WARMUP + args.steps      # stops before that step's update

    before = memory_now(args.device, "VmRSS")      # python, torch, transformers: not training
    out = Path(tempfile.mkdtemp(prefix="bench_train_")) / "out"
    try:
        train(base, items, ref, out, cfg, device=args.device, on_progress=on_progress, should_stop=should_stop)
    except Interrupted:
        pass                                   # stopped before the last step's update: no checkpoint
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    timed = stamps[WARMUP - 1:]                # from the end of the warm-up step
    seconds = (timed[-1] - timed[0]) / max(len(timed) - 1, 1) if len(timed) > 1 else float("nan")
    return dict(size=args.size, method=args.method, optimizer=args.optimizer, checkpointing=args.checkpointing,
                frames=args.frames, steps=len(timed) - 1, seconds_per_step=seconds,
                steps_per_s=1 / seconds if seconds == seconds else None, peak_gib=memory_now(args.device),
                before_gib=before,
                estimate_gib=estimate.total / 2**30, device=args.device, torch=torch.__version__,
                threads=torch.get_num_threads())


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# Fine-tuning speed and memory ({meta['device']})", "",
           f"- date: {meta['date']}", f"- machine: {meta['machine']}", f"- torch {meta['torch']}, fp32",
           f"- one item per step: {meta['frames']} frames (random codes) + a {len(TEXT)}-character sentence; "
           f"the first step is warm-up", "",
           "| size | method | optimizer | checkpointing | steps/s | s/step | peak memory (GiB) "
           "| peak - before training (GiB) | estimate (GiB) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['size']} | {r['method']} | {r['optimizer']} | {r['checkpointing']} | "
                       f"refused or failed: {r['error']} | | | | |")
            continue
        out.append(f"| {r['size']} | {r['method']} | {r['optimizer']} | {'yes' if r['checkpointing'] else 'no'} | "
                   f"{r['steps_per_s']:.3f} | {r['seconds_per_step']:.2f} | {r['peak_gib']:.2f} | "
                   f"{r['peak_gib'] - r['before_gib']:.2f} | {r['estimate_gib']:.2f} |")
    out += ["", "Peak memory: the process's peak resident set on CPU, the allocator peak on CUDA; "
            "\"before training\" is the resident set after importing torch and transformers, just before "
            "`train()` (CPU). The estimate is what `train()` checks before it starts (it includes 10% headroom)."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="tiny,0.6B")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--checkpointing", action="store_true", help="also measure with gradient checkpointing")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)      # worker mode
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("BENCH " + json.dumps(measure(args)), flush=True)
        return
    rows = []
    for size in args.sizes.split(","):
        base_folder(size, args.device)
        for method in args.methods.split(","):
            for ckpt in ([False, True] if args.checkpointing else [False]):
                cmd = [sys.executable, __file__, "--one", "--size", size, "--method", method, "--device", args.device,
                       "--frames", str(args.frames), "--steps", str(args.steps), "--threads", str(args.threads),
                       "--optimizer", args.optimizer] + (["--checkpointing"] if ckpt else [])
                run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                line = next((l for l in run.stdout.splitlines() if l.startswith("BENCH ")), None)
                if line is None:
                    last = (run.stderr.strip().splitlines() or ["?"])[-1]
                    rows.append(dict(size=size, method=method, optimizer=args.optimizer, checkpointing=ckpt,
                                     error=last[:200]))
                else:
                    rows.append(json.loads(line[6:]))
                print(rows[-1], flush=True)
    import torch

    meta = dict(date=datetime.date.today().isoformat(), device=args.device, frames=args.frames,
                torch=torch.__version__, machine=f"{platform.machine()}, {_cpu()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train-{args.device}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"train-{args.device}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


def _cpu() -> str:
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
