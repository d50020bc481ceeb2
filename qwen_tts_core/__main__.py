"""Command line: text in, 24 kHz WAV out. The mode follows the model folder's type.

    python -m qwen_tts_core MODEL_DIR --text "Hello!" --speaker vivian --out hello.wav
    python -m qwen_tts_core MODEL_DIR --text "Hello!" --instruct "A calm, deep voice." --out hi.wav
    python -m qwen_tts_core MODEL_DIR --text "Hello!" --ref-audio me.wav --ref-text "..." --out me.wav
"""
from __future__ import annotations

import argparse
import sys
import time

from .errors import QwenTTSError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qwen_tts_core", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model folder (e.g. models/qwen-tts/Qwen3-TTS-12Hz-1.7B-CustomVoice)")
    ap.add_argument("--text", required=True, help="what to say")
    ap.add_argument("--out", required=True, help="output .wav path")
    ap.add_argument("--language", default="auto", help="auto, english, chinese, german, ...")
    ap.add_argument("--speaker", help="built-in speaker (CustomVoice models)")
    ap.add_argument("--instruct", help="style instruction / voice description")
    ap.add_argument("--ref-audio", help="reference .wav for voice cloning (Base models)")
    ap.add_argument("--ref-text", help="transcript of the reference (in-context cloning)")
    ap.add_argument("--x-vector-only", action="store_true", help="clone from the speaker embedding only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, help="cap on the generated length")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on GPUs that have it natively, fp16 on "
                    "older GPUs and Apple MPS, fp32 on CPU), bf16, fp16 or fp32")
    ap.add_argument("--no-cuda-graphs", action="store_true",
                    help="on CUDA, run the plain step instead of replaying each frame as a CUDA graph")
    args = ap.parse_args(argv)

    from . import audio
    from .api import FRAME_RATE, QwenTTS

    try:
        t0 = time.perf_counter()
        tts = QwenTTS.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                      cuda_graphs=not args.no_cuda_graphs)
        options = dict(seed=args.seed, decode=True)
        if args.max_seconds:
            options["max_frames"] = max(1, int(args.max_seconds * FRAME_RATE))
        t1 = time.perf_counter()
        if tts.model_type == "custom_voice":
            out = tts.generate_custom_voice(args.text, args.speaker or tts.speakers[0], args.language,
                                            args.instruct, **options)
        elif tts.model_type == "voice_design":
            if not args.instruct:
                raise QwenTTSError("A VoiceDesign model needs --instruct with a voice description.")
            out = tts.generate_voice_design(args.text, args.instruct, args.language, **options)
        else:
            if not args.ref_audio:
                raise QwenTTSError("A Base model clones a voice: give --ref-audio (and --ref-text).")
            wav, rate = audio.read_wav(args.ref_audio)
            voice = tts.create_voice_clone_prompt(wav, rate, args.ref_text, args.x_vector_only)
            out = tts.generate_voice_clone(args.text, voice, args.language, **options)
        seconds = out.audio[0].numel() / out.sample_rate
        audio.write_wav(args.out, out.audio[0], out.sample_rate)
        took = time.perf_counter() - t1
        print(f"wrote {args.out}: {seconds:.2f} s of audio in {took:.2f} s "
              f"({seconds / max(took, 1e-9):.2f}x real time; model load {t1 - t0:.1f} s)")
        for w in out.warnings:
            print(f"warning: {w}", file=sys.stderr)
        return 0
    except (QwenTTSError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
