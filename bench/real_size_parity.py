"""Parity with the official package at the released checkpoints' size (not the tiny fixtures):
a real-size random CustomVoice checkpoint (bench/.cache, as bench/run.py writes it), greedy
decoding on both sides, then the same codes decoded in float64 by both speech decoders to tell
fp32 rounding from a real difference. Prints one JSON line of measurements.

    .venv/bin/python bench/real_size_parity.py --size 0.6B --frames 48     (~10 min on 2 CPU cores)

The official side runs in its own process with the transformers-4.57 overlay of tools/env.sh
(--official-python/--official-pythonpath as for bench/run.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(HERE)]

import torch  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, while the evening news reports rain."
SPEAKER, LANGUAGE = "vivian", "english"


def official(args) -> None:
    """Greedy generation and a float64 decode with the official package; saves the results."""
    import official_oracle as oracle
    from safetensors.torch import save_file

    tts = oracle.load_official(Path(args.model))
    with torch.inference_mode():
        rec = oracle.run_case(tts, "generate_custom_voice", dict(
            text=TEXT, speaker=SPEAKER, language=LANGUAGE, max_new_tokens=args.frames + 1, **oracle.GREEDY))
        codes = rec["codes"][0]
        refs = {f"ref_codes.{rate}": tts.model.speech_tokenizer.encode(wav.numpy(), sr=rate).audio_codes[0].contiguous()
                for rate, wav in references().items()}                   # resampled by librosa
        decoder = tts.model.speech_tokenizer.model.to(torch.float64)   # its output kept in float64
        wav64 = decoder.decode(codes[None], return_dict=True).audio_values[0]
    save_file({"ids": rec["ids"][0], "logits": rec["logits"].float(), "codes": codes,
               "wav32": rec["wavs"][0], "wav64": wav64.double().flatten(), **refs}, args.out)


def references() -> dict[int, torch.Tensor]:
    """The fixture's English reference clip (24 kHz) at 16 and 44.1 kHz, as a user might give it."""
    from qwen_tts_core.audio import read_wav, resample

    wav, rate = read_wav(ROOT / "tests" / "fixtures" / "audio" / "ref_en.wav")
    return {r: resample(wav[0], rate, r).contiguous() for r in (16000, 44100)}


def ours(model: Path) -> dict:
    from qwen_tts_core.api import QwenTTS
    from qwen_tts_core.codec import SpeechTokenizer
    from qwen_tts_core.generate import collate, prefill
    from qwen_tts_core.prompt import Request
    from qwen_tts_core.sampling import Sampling

    tts = QwenTTS.from_pretrained(model, dtype="fp32", device="cpu")
    reqs = [Request(TEXT, LANGUAGE, SPEAKER)]
    with torch.inference_mode():
        prompts = tts.build_prompts(reqs)
        talker = tts.model.talker
        batch = collate(prompts, talker.embed_text(torch.tensor([tts.config.tts_pad_token_id]))[0])
        caches = talker.model.new_caches(1, batch.embeds.shape[1], torch.float32, "cpu")
        logits = talker.codec_head(prefill(talker, batch, caches))
        greedy = Sampling(do_sample=False, repetition_penalty=tts.defaults.repetition_penalty)
        out = tts.generate(reqs, max_frames=ARGS.frames, sampling=greedy, sub_sampling=Sampling(do_sample=False),
                           decode=True)
        dec64 = SpeechTokenizer.from_pretrained(model, dtype=torch.float64, encoder=False)
        refs = {f"ref_codes.{rate}": tts.codec.encode(wav, rate)[0][0].t() for rate, wav in references().items()}
    return {"ids": prompts[0].ids["text"], "logits": logits, "codes": out.codes[0], "wav32": out.audio[0],
            "dec64": dec64, **refs}


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="compare", choices=["compare", "official"])
    ap.add_argument("--model")
    ap.add_argument("--out")
    ap.add_argument("--size", default="0.6B")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--official-python", default=sys.executable)
    ap.add_argument("--official-pythonpath", default=str(Path(sys.prefix) / "transformers-4.57"))
    ARGS = args = ap.parse_args()
    if args.what == "official":
        return official(args)

    from run import ensure_weights
    from safetensors.torch import load_file

    model = ensure_weights({"python": args.official_python, "pythonpath": args.official_pythonpath}, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.safetensors"
        env = dict(os.environ, PYTHONPATH=args.official_pythonpath)
        subprocess.run([args.official_python, __file__, "official", "--model", str(model), "--out", str(out),
                        "--frames", str(args.frames)], check=True, cwd=ROOT, env=env)
        want = load_file(str(out))
    got = ours(model)
    same_codes = got["codes"].shape == want["codes"].shape and torch.equal(got["codes"], want["codes"])
    with torch.inference_mode():
        ours64 = got["dec64"].decode([want["codes"]])[0].double()
    n = min(len(got["wav32"]), len(want["wav32"]))
    result = {
        "size": args.size, "frames": int(want["codes"].shape[0]), "torch": torch.__version__,
        "prompt_ids_identical": bool(torch.equal(got["ids"].flatten(), want["ids"].flatten())),
        "first_step_logits_max_abs": float((got["logits"] - want["logits"]).abs().max()),
        "greedy_codes_identical": bool(same_codes),
        "codes_differing": int((got["codes"] != want["codes"]).sum()) if got["codes"].shape == want["codes"].shape else None,
        "audio_peak": float(want["wav32"].abs().max()),
        "audio_fp32_max_abs": float((got["wav32"][:n].double() - want["wav32"][:n].double()).abs().max()),
        "audio_float64_max_abs": float((ours64 - want["wav64"]).abs().max()),
        "ours_fp32_vs_float64": float((got["wav32"][:n].double() - want["wav64"][:n]).abs().max()),
        "official_fp32_vs_float64": float((want["wav32"][:n].double() - want["wav64"][:n]).abs().max()),
    }
    for key in [k for k in want if k.startswith("ref_codes.")]:     # torchaudio vs librosa resampling
        a, b = got[key], want[key]
        result[f"{key}_differing"] = (f"{int((a != b).sum())} of {a.numel()} codes, {int((a != b).any(1).sum())} "
                                      f"of {a.shape[0]} frames" if a.shape == b.shape else f"{a.shape} vs {b.shape}")
    print("PARITY " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
