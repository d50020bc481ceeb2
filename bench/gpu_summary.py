"""The GPU check's report (bench/gpu_check.sh runs it last, also when a step was cut): the
issue's targets, each with its measured value or "not measured", every step's status, and the
measurements themselves. Writes RESULTS/gpu-check.json and RESULTS/gpu-check.md."""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

FRAME_RATE = 12.5


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def xrt(row: dict | None) -> float | None:
    """Audio seconds per wall second of a bench row (all batch items' audio)."""
    if not row or not row.get("total_s"):
        return None
    return row["audio_s"] / row["total_s"]


def target(name: str, value, ok, unit: str = "") -> dict:
    if value is None:
        return dict(target=name, measured=None, met=None)
    return dict(target=name, measured=round(value, 3), unit=unit, met=bool(ok))


def targets(rows: dict, host: dict | None) -> list[dict]:
    o1, o16, f1, f16 = (rows.get(k) for k in ("ours-b1", "ours-b16", "official-b1", "official-b16"))
    x1, x16, fx1 = xrt(o1), xrt(o16), xrt(f1)
    host_b1 = next((r["ms_per_frame_median"] for r in (host or {}).get("rows", []) if r["batch"] == 1), None)
    return [
        target("1.7B batch 1: at least 20x real time", x1, x1 is not None and x1 >= 20, "x"),
        target("1.7B batch 1: first audio (stream) at most 60 ms", o1 and o1["first_audio_s"] * 1000,
               o1 and o1["first_audio_s"] <= 0.060, "ms"),
        target("1.7B batch 1: at least 10x the official package", x1 and fx1 and x1 / fx1,
               x1 and fx1 and x1 / fx1 >= 10, "x"),
        target("1.7B batch 16: at least 150x real time (aggregate)", x16, x16 is not None and x16 >= 150, "x"),
        target("peak VRAM at batch 1 no higher than the official package's", o1 and f1 and o1["peak_gib"],
               o1 and f1 and o1["peak_gib"] <= f1["peak_gib"], "GiB"),
        target("host time per frame at batch 1 at most 0.3 ms", host_b1, host_b1 is not None and host_b1 <= 0.3, "ms"),
        target("frames replayed a CUDA graph (batch 1 and 16)", o1 and o16 and min(o1.get("graph_frames", 0),
               o16.get("graph_frames", 0)), o1 and o16 and o1.get("cuda_graphs") and o16.get("cuda_graphs"), "frames"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=int, default=470)
    ap.add_argument("--elapsed", type=int, default=0)
    args = ap.parse_args()
    res = Path(args.results)
    steps = read_lines(res / "gpu-steps.jsonl")
    rows = {r["row"]: r for r in read_lines(res / "gpu-rows.jsonl")}
    host = read_json(res / f"host-overhead-{args.device}.json")
    train = read_json(res / f"train-{args.device}.json")
    machine = next((r.get("torch") for r in rows.values()), None)
    out = dict(device=args.device, budget_s=args.budget, elapsed_s=args.elapsed, steps=steps,
               targets=targets(rows, host), rows=list(rows.values()), host_overhead=host, train=train,
               machine=f"{platform.node()}, {platform.processor() or platform.machine()}", torch=machine)
    (res / "gpu-check.json").write_text(json.dumps(out, indent=2) + "\n")

    lines = [f"# GPU check ({args.device})", "",
             f"- {args.elapsed} s of a {args.budget} s budget; torch {machine or 'n/a'}", "",
             "| step | status | seconds | budget |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s.get('seconds', '')} | {s.get('limit', '')} |" for s in steps]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in out["targets"]:
        m = "not measured" if t["measured"] is None else f"{t['measured']} {t['unit']}"
        lines.append(f"| {t['target']} | {m} | {'n/a' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
    lines += ["", "| row | xRT | first audio (s) | peak (GiB) | frames ran on |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        first = r.get("first_audio_s")
        lines.append(f"| {name} | {xrt(r):.3f} | {'n/a' if first is None else f'{first:.3f}'} | "
                     f"{r.get('peak_gib', float('nan')):.2f} | {r.get('ran', 'official package')} |")
    for r in (train or {}).get("rows", []):
        if "error" in r:
            lines.append(f"- training {r['size']} {r['method']}: {r['error']}")
        else:
            lines.append(f"- training {r['size']} {r['method']}: {r['steps_per_s']:.2f} steps/s, peak "
                         f"{r['peak_gib']:.2f} GiB, estimate {r['estimate_gib']:.2f} GiB")
    (res / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
