"""Command line: train a new speaker from recordings into a CustomVoice model folder.

    python -m qwen_tts_core.finetune --base models/qwen-tts/Qwen3-TTS-12Hz-1.7B-Base \\
        --data my_recordings/ --name my_voice --out models/qwen-tts/my_voice --epochs 3 --lora
    python -m qwen_tts_core.finetune ... --resume          # continue after Ctrl-C or with more epochs
    python -m qwen_tts_core.finetune --memory-table        # estimated fit on 8-24 GB GPUs

--data: a folder of name.wav + name.txt pairs, a folder with an LJSpeech-style metadata.csv, or
the official recipe's .jsonl. Ctrl-C stops after the current step and keeps the last finished
epoch; a second Ctrl-C stops at once (still nothing half-written).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from ..errors import Interrupted, QwenTTSError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m qwen_tts_core.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="Base model folder (e.g. models/qwen-tts/Qwen3-TTS-12Hz-1.7B-Base)")
    ap.add_argument("--data", help="dataset: folder of name.wav + name.txt, folder with metadata.csv, or .jsonl")
    ap.add_argument("--name", help="the new speaker's name (letters, digits, '_', '-')")
    ap.add_argument("--out", help="output model folder (default: <base's parent>/<name>)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, help="learning rate (default 2e-5 full, 1e-4 LoRA)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--lora", action="store_true", help="train LoRA adapters (merged when saving) instead of all weights")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32.0)
    ap.add_argument("--gradient-checkpointing", action="store_true", help="less memory, ~30%% slower steps")
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit"],
                    help="adamw8bit needs bitsandbytes")
    ap.add_argument("--train-text-embedding", action="store_true",
                    help="full fine-tuning: also train the text embedding table")
    ap.add_argument("--language", default="auto", help="language of the clips (a .jsonl may set it per row)")
    ap.add_argument("--ref-audio", help="clip for the speaker embedding (default: the dataset's longest clip)")
    ap.add_argument("--cache-dir", help="where speech codes are cached (default: <data>/.qwen-tts-codes)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32"], help="auto: bf16 autocast on CUDA")
    ap.add_argument("--save-dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue the training saved in --out")
    ap.add_argument("--overwrite", action="store_true", help="replace --out (when the first new epoch is saved)")
    ap.add_argument("--memory-table", action="store_true", help="print estimated memory per setting and exit")
    return ap


class StopFlag:
    """First Ctrl-C: stop after the current step (the last finished epoch is kept); second: at once."""

    def __init__(self):
        self.requested = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:          # not the main thread: no handler, Ctrl-C stops at once
            self.previous = None

    def _handle(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, self.previous)
            raise KeyboardInterrupt
        self.requested = True
        print("\nStopping after this step (Ctrl-C again to stop at once)...", file=sys.stderr, flush=True)

    def __call__(self) -> bool:
        return self.requested

    def close(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def progress_line(p, width: int = 24) -> str:
    done = int(width * p.step / max(p.steps, 1))
    left = "" if p.seconds_left is None else f" ~{int(p.seconds_left) // 60:02d}:{int(p.seconds_left) % 60:02d} left"
    return (f"epoch {p.epoch}/{p.epochs} [{'#' * done}{'.' * (width - done)}] step {p.step}/{p.steps} "
            f"loss {p.loss:.4f}{left}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.memory_table:
        from .memory import table
        print(table())
        return 0
    missing = [f"--{k}" for k in ("base", "data", "name") if not getattr(args, k)]
    if missing:
        print(f"error: {', '.join(missing)} required (see --help)", file=sys.stderr)
        return 2

    from .. import speech_codes
    from .dataset import codec_fingerprint, encode, reference_clip, scan
    from .trainer import TrainConfig, preflight, train

    base = Path(args.base)
    out = Path(args.out) if args.out else base.parent / args.name
    if_exists = "resume" if args.resume else "overwrite" if args.overwrite else "stop"
    cfg = TrainConfig(args.name, args.epochs, "lora" if args.lora else "full", args.lr, args.batch_size,
                      args.grad_accum, gradient_checkpointing=args.gradient_checkpointing,
                      optimizer=args.optimizer, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                      train_text_embedding=args.train_text_embedding, precision=args.precision,
                      save_dtype=args.save_dtype, seed=args.seed)
    tty = sys.stderr.isatty()
    stop = StopFlag()
    try:
        preflight(base, out, cfg, if_exists)
        data = scan(args.data, args.language, args.ref_audio)
        print(data.report(), flush=True)
        codec = speech_codes.load_speech_tokenizer(base)
        t0 = time.perf_counter()
        items = encode(data, codec, codec_fingerprint(base), args.cache_dir,
                       on_clip=lambda i, n: print(f"\rspeech codes {i}/{n}", end="" if i < n else "\n",
                                                  file=sys.stderr, flush=True))
        del codec
        last = [0.0]

        def show(p):
            now = time.perf_counter()
            if tty:
                print("\r" + progress_line(p), end="", file=sys.stderr, flush=True)
            elif now - last[0] > 10 or p.step == p.steps:
                print(progress_line(p), file=sys.stderr, flush=True)
                last[0] = now

        result = train(base, items, reference_clip(data), out, cfg, args.device, if_exists,
                       data.fingerprint(), on_progress=show, should_stop=stop)
        if tty:
            print(file=sys.stderr)
        print(f"wrote {result.folder}: speaker '{result.speaker}', {result.epochs_done} epochs, {result.steps} steps, "
              f"last loss {result.losses[-1] if result.losses else float('nan'):.4f} "
              f"({time.perf_counter() - t0:.0f} s; base files {result.files})")
        return 0
    except Interrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    except (QwenTTSError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        stop.close()


if __name__ == "__main__":
    sys.exit(main())
