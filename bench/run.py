"""Side-by-side benchmark: ours vs the official qwen-tts package, same weights (real-size random
checkpoints in the official layout), same machine, same run. Writes a Markdown and a JSON table.

    python bench/run.py --device cpu --sizes 0.6B --batches 1 --frames 32
    python bench/run.py --device cuda --sizes 0.6B,1.7B --batches 1,16 --dtype bf16
    bash bench/gpu_check.sh            (the GPU check: CUDA tests + this bench + the targets table)

Ours runs with CUDA graphs on CUDA (as the nodes and the CLI do; --no-cuda-graphs for the eager
step), after one warm-up generation of the same shape (which captures the graph).

The official side needs transformers 4.57.3 (it pins it). By default it runs with the same
python and torch as ours (the .venv of tools/env.sh) with the transformers-4.57 overlay, where
tools/env.sh also installs qwen-tts 0.1.1, on PYTHONPATH; --official-python/--official-pythonpath
point elsewhere (e.g. the oracle venv of tools/oracle/setup_venv.sh). Each measurement runs in
a fresh process, after one short warm-up generation.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(python: str, *args: str, pythonpath: str | None = None, timeout: int = 7200) -> dict:
    cmd = [python, str(HERE / "worker.py"), *args]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    for line in run.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")


def ensure_weights(official: dict, size: str, device: str = "cpu") -> Path:
    folder = HERE / ".cache" / f"Qwen3-TTS-{size}-CustomVoice-random"
    if not (folder / "speech_tokenizer" / "model.safetensors").exists():
        print(f"writing random {size} weights to {folder} ...", flush=True)
        worker(official["python"], "weights", "--model", str(folder), "--size", size, "--device", device,
               pythonpath=official["pythonpath"])
    return folder


def derived(r: dict) -> dict:
    frames = sum(r["frames"])
    r["xrt"] = r["audio_s"] / r["total_s"]
    r["frames_per_s"] = frames / r["codes_s"]
    steps = max(r["frames"])  # frame steps of the batch
    r["talker_steps_per_s"] = steps / r["talker_s"] if r.get("talker_s") else None
    r["code_predictor_frames_per_s"] = steps / r["code_predictor_s"] if r.get("code_predictor_s") else None
    return r


def fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# Benchmark: ours vs official qwen-tts {meta['official_version']}", "",
           f"- date: {meta['date']}", f"- machine: {meta['machine']}",
           f"- ours: torch {meta['torch_ours']}; official: torch {meta['torch_official']}, transformers 4.57.3",
           f"- weights: real-size random checkpoints in the official layout (EOS disabled, "
           f"{meta['frames']} frames per item), speaker vivian, default sampling (seed 0)", "",
           "| device | size | dtype | batch | impl | xRT (audio s / wall s) | speed-up vs official | "
           "first audio (s) | talker steps/s | code predictor frames/s | decode (s) | peak mem (GiB) | frames ran on |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['device']} | {r['size']} | {r['dtype']} | {r['batch']} | {r['impl']} | "
                   f"{fmt(r['xrt'], '.3f')} | {fmt(r.get('speedup'), '.2f')}x | "
                   f"{fmt(r.get('first_audio_s'))} | {fmt(r['talker_steps_per_s'])} | "
                   f"{fmt(r['code_predictor_frames_per_s'])} | {fmt(r['decode_s'])} | {fmt(r['peak_gib'])} | "
                   f"{r.get('ran', 'n/a')} |")
    out += ["", "xRT counts the audio of all batch items; first audio for the official package is "
            "its total time (it has no streaming output)."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="0.6B")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--official-python", default=sys.executable)
    ap.add_argument("--official-pythonpath", default=str(ROOT / ".venv" / "transformers-4.57"))
    ap.add_argument("--ours-python", default=sys.executable)
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--no-cuda-graphs", action="store_true",
                    help="ours without CUDA graphs (they are on by default on CUDA)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", help="file stem of the tables (default: DEVICE-DTYPE)")
    args = ap.parse_args()

    rows = []
    common = ["--device", args.device, "--dtype", args.dtype, "--frames", str(args.frames),
              "--threads", str(args.threads)]
    official = {"python": args.official_python, "pythonpath": args.official_pythonpath}
    for size in args.sizes.split(","):
        folder = ensure_weights(official, size, args.device)
        for batch in map(int, args.batches.split(",")):
            base = ["--model", str(folder), "--size", size, "--batch", str(batch), *common]
            pair = {"ours": derived(worker(args.ours_python, "ours", *base,
                                           *(["--no-cuda-graphs"] if args.no_cuda_graphs else [])))}
            print(f"{size} b{batch} ours: {pair['ours']['xrt']:.3f} xRT", flush=True)
            if not args.skip_official:
                pair["official"] = derived(worker(args.official_python, "official", *base,
                                                  pythonpath=args.official_pythonpath))
                print(f"{size} b{batch} official: {pair['official']['xrt']:.3f} xRT", flush=True)
                pair["ours"]["speedup"] = pair["ours"]["xrt"] / pair["official"]["xrt"]
                pair["official"]["speedup"] = 1.0
            for impl, r in pair.items():
                rows.append(dict(r, impl=impl, size=size))

    ours = next(r for r in rows if r["impl"] == "ours")
    official = next((r for r in rows if r["impl"] == "official"), {})
    meta = dict(date=datetime.date.today().isoformat(), frames=args.frames,
                machine=f"{platform.processor() or platform.machine()}, {_cpu_info()}, {_gpu_info(args.device)}",
                torch_ours=ours["torch"], torch_official=official.get("torch", "n/a"),
                official_version="0.1.1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"{args.device}-{args.dtype}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


def _cpu_info() -> str:
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def _gpu_info(device: str) -> str:
    if not device.startswith("cuda"):
        return "no GPU used"
    import torch
    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    main()
