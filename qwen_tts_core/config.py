"""Model configuration read from a checkpoint's config.json files.

Field names follow the official config keys one to one; only what the model code reads is kept.
Codec control ids, language ids and speaker ids always come from the checkpoint (the config class
defaults of the official package differ from the released checkpoints).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .errors import ModelFolderError

MODEL_TYPES = ("base", "custom_voice", "voice_design")


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ModelFolderError(f"Missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e}); the download is probably "
                               "incomplete: fetch this file again.") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} should hold a JSON object.")
    return data


def from_keys(cls, raw: dict, where: str):
    """Builds dataclass `cls` from the keys of `raw` it knows; unknown keys are ignored, missing
    required keys are reported by name."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in raw.items() if k in known}
    try:
        return cls(**kwargs)
    except TypeError:
        missing = sorted(f.name for f in fields(cls) if f.name not in kwargs
                         and f.default is MISSING and f.default_factory is MISSING)
        raise ModelFolderError(f"{where} lacks the keys {missing}.") from None


def size_label(size: str, unknown: str = "?") -> str:
    """"0.6B" / "1.7B" from a checkpoint's tts_model_size "0b6" / "1b7"; `unknown` when empty."""
    return size.upper().replace("B", ".", 1) + "B" if size else unknown


@dataclass
class TransformerConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    vocab_size: int = 2048
    num_code_groups: int = 16
    max_position_embeddings: int = 32768


@dataclass
class TalkerConfig(TransformerConfig):
    text_vocab_size: int = 151936
    text_hidden_size: int = 2048
    codec_eos_token_id: int = 0
    codec_pad_id: int = 0
    codec_bos_id: int = 0
    codec_think_id: int = 0
    codec_nothink_id: int = 0
    codec_think_bos_id: int = 0
    codec_think_eos_id: int = 0
    codec_language_id: dict = field(default_factory=dict)
    spk_id: dict = field(default_factory=dict)
    spk_is_dialect: dict = field(default_factory=dict)
    code_predictor: TransformerConfig | None = None


@dataclass
class SpeakerEncoderConfig:
    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: list = field(default_factory=lambda: [512, 512, 512, 512, 1536])
    enc_kernel_sizes: list = field(default_factory=lambda: [5, 3, 3, 3, 1])
    enc_dilations: list = field(default_factory=lambda: [1, 2, 3, 4, 1])
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000


@dataclass
class ModelConfig:
    tts_model_type: str
    tts_model_size: str
    talker: TalkerConfig
    speaker_encoder: SpeakerEncoderConfig | None
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673

    @property
    def languages(self) -> list[str]:
        """Language names a user can pick ("auto" first); dialect ids are chosen by speaker."""
        return ["auto"] + [k for k in self.talker.codec_language_id if "dialect" not in k]

    @property
    def speakers(self) -> list[str]:
        return list(self.talker.spk_id)

    @property
    def size_label(self) -> str:
        """"0.6B" / "1.7B" from the checkpoint's "0b6" / "1b7" ("?" when unknown)."""
        return size_label(self.tts_model_size)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config.json") -> "ModelConfig":
        model_type = raw.get("model_type")
        if model_type != "qwen3_tts":
            hint = ""
            if model_type == "qwen3_tts_tokenizer_12hz":
                hint = " This is a speech-tokenizer folder: load it with the speech tokenizer, not as a TTS model."
            elif model_type == "qwen3_tts_tokenizer_25hz":
                hint = " The 25 Hz tokenizer is not supported; use the 12 Hz models."
            raise ModelFolderError(
                f"{where} describes a '{model_type}' model, not Qwen3-TTS (model_type 'qwen3_tts').{hint}")
        kind = raw.get("tts_model_type")
        if kind not in MODEL_TYPES:
            raise ModelFolderError(
                f"{where}: unknown tts_model_type {kind!r}; expected one of {list(MODEL_TYPES)}.")
        tokenizer_type = raw.get("tokenizer_type", "qwen3_tts_tokenizer_12hz")
        if tokenizer_type != "qwen3_tts_tokenizer_12hz":
            raise ModelFolderError(f"{where}: tokenizer_type {tokenizer_type!r} is not supported; "
                                   "only the 12 Hz Qwen3-TTS models are.")
        talker_raw = raw.get("talker_config")
        if not isinstance(talker_raw, dict) or not isinstance(talker_raw.get("code_predictor_config"), dict):
            raise ModelFolderError(f"{where} has no talker_config/code_predictor_config.")
        talker = from_keys(TalkerConfig, talker_raw, f"{where} talker_config")
        talker.code_predictor = from_keys(TransformerConfig, talker_raw["code_predictor_config"],
                                      f"{where} code_predictor_config")
        # head_dim is explicit in released configs (and differs from hidden/heads for 0.6B)
        for c in (talker, talker.code_predictor):
            if not c.head_dim:
                c.head_dim = c.hidden_size // c.num_attention_heads
        speaker = None
        if kind == "base":
            speaker = from_keys(SpeakerEncoderConfig, raw.get("speaker_encoder_config") or {},
                            f"{where} speaker_encoder_config")
        top = {k: raw[k] for k in ("tts_pad_token_id", "tts_bos_token_id", "tts_eos_token_id") if k in raw}
        return cls(tts_model_type=kind, tts_model_size=str(raw.get("tts_model_size") or ""),
                   talker=talker, speaker_encoder=speaker, **top)


@dataclass
class GenerationDefaults:
    """generation_config.json of a model folder (sampling defaults of the checkpoint). Without
    that file, these class defaults: the released checkpoints' sampling values, the one place
    they are written (`Sampling` and the ComfyUI nodes' widgets take their defaults from here)."""
    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_dosample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    max_new_tokens: int = 2048          # the official wrapper's cap (the released files say 8192)

    @classmethod
    def from_file(cls, path: Path) -> "GenerationDefaults":
        if not path.exists():
            return cls()
        return from_keys(cls, read_json(path), str(path))
