"""SpeechTokenizer: loading a 12 Hz tokenizer folder, checking inputs, batching.

Code layouts: a batch is [B, 16, T] (codebook-major, what `encode` returns); one item may be
[16, T] or the official time-major [T, 16] (read as [16, T] when T == 16). Batches are padded
with PAD (-1) after each item's last frame, as the official package pads them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..audio import prepare
from ..checkpoint import load_into, weight_files
from ..config import from_keys, read_json
from ..errors import InputError, ModelFolderError
from .decoder import DecoderConfig, SpeechDecoder
from .encoder import MimiEncoder
from .streaming import StreamingDecoder, decode_chunks

MODEL_TYPE = "qwen3_tts_tokenizer_12hz"
MODEL_TYPE_FAMILY = "qwen3_tts_tokenizer_"     # the 12 Hz one and the 25 Hz one (not supported)
PAD = -1
OFFICIAL_CHUNK, OFFICIAL_CONTEXT = 300, 25  # qwen-tts 0.1.1 chunked_decode
DECODE_BUDGET = 1 << 30   # bytes of decoder activations per call (chunk size = budget / batch)


def decode_budget(device: torch.device) -> int:
    """Bytes of decoder activations one decode call may take on `device`: on CUDA half of what
    is free there now (the driver's free memory plus what torch's allocator holds unused; the
    other half is headroom for what the estimate leaves out), elsewhere, or when CUDA cannot
    say, `DECODE_BUDGET`. (The CUDA figure is unmeasured: no GPU where this was written.)"""
    if device.type != "cuda":
        return DECODE_BUDGET
    try:
        free, _ = torch.cuda.mem_get_info(device)
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    except (RuntimeError, AssertionError):   # no driver / CUDA not initialised: the constant
        return DECODE_BUDGET
    return (free + unused) // 2


@dataclass
class CodecConfig:
    encoder_config: dict
    decoder_config: dict
    encoder_valid_num_quantizers: int = 16
    input_sample_rate: int = 24000
    output_sample_rate: int = 24000
    encode_downsample_rate: int = 1920
    decode_upsample_rate: int = 1920


# The 12 Hz tokenizer's code layout as its config gives it (the released config.json agrees):
# codes are [16 codebooks, frames] of values in [0, 2048). Callers without a loaded tokenizer
# (saved voices, the speech-codes adapter) check against these.
NUM_CODEBOOKS = CodecConfig.encoder_valid_num_quantizers
CODEBOOK_SIZE = DecoderConfig.codebook_size


@dataclass(frozen=True)
class OutOfRange:
    count: int          # how many codes lie outside [0, size)
    index: tuple        # where the first one is
    value: int          # and what it is


def codes_out_of_range(x: torch.Tensor, size: int = CODEBOOK_SIZE) -> OutOfRange | None:
    """The one code-range rule: every code in [0, size). None when `x` keeps it, else what broke
    it (each caller words the error for its input: see `check_codes`, `_check_range`, `load_voice`)."""
    bad = (x < 0) | (x >= size)
    if not bool(bad.any()):
        return None
    where = tuple(bad.nonzero()[0].tolist())
    return OutOfRange(int(bad.sum()), where, int(x[where]))


FULL_CONTEXT_SECONDS = 60  # encode clips up to this long with the official whole-past attention

def tokenizer_folder(folder: str | Path) -> Path:
    """The folder holding the speech tokenizer: `folder` itself when its config.json describes a
    speech tokenizer (the standalone Qwen3-TTS-Tokenizer-12Hz), its `speech_tokenizer/` subfolder
    when the config.json describes a Qwen3-TTS model. The config decides, not the presence of a
    subfolder: a tokenizer folder that also holds a copy in speech_tokenizer/ is still itself.
    (A 25 Hz tokenizer's folder is returned too: `read_codec_config` refuses it by name.)"""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(
            f"Speech tokenizer folder not found: {folder}. Download Qwen/Qwen3-TTS-Tokenizer-12Hz "
            "into that folder (or pick a Qwen3-TTS model folder, which ships its own).")
    sub = folder / "speech_tokenizer"
    if not (folder / "config.json").exists():
        if sub.is_dir():              # a model folder that lost its config.json: its tokenizer is whole
            return tokenizer_folder(sub)
        raise ModelFolderError(f"{folder} has neither a config.json nor a speech_tokenizer/ subfolder; "
                               "it is not a Qwen3-TTS model or speech-tokenizer folder.")
    kind = read_json(folder / "config.json").get("model_type")
    if isinstance(kind, str) and kind.startswith(MODEL_TYPE_FAMILY):
        return folder
    if kind == "qwen3_tts":
        if not sub.is_dir():
            raise ModelFolderError(
                f"{folder} has no speech_tokenizer/ subfolder. Every Qwen3-TTS checkpoint ships one: download "
                "the whole model repository, including speech_tokenizer/. For a model folder without its "
                "speech_tokenizer/ that is e.g. `hf download Qwen/Qwen3-TTS-12Hz-1.7B-Base --include "
                f"'speech_tokenizer/*' --local-dir {folder}` with your model's name; or point to a standalone "
                "Qwen/Qwen3-TTS-Tokenizer-12Hz folder.")
        return tokenizer_folder(sub)
    raise ModelFolderError(f"{folder} is neither a Qwen3-TTS speech tokenizer (model_type "
                           f"'{MODEL_TYPE}') nor a Qwen3-TTS model folder "
                           f"(its config.json says {kind!r}).")


def read_codec_config(folder: Path) -> CodecConfig:
    path = folder / "config.json"
    raw = read_json(path)
    kind = raw.get("model_type")
    if kind == "qwen3_tts_tokenizer_25hz":
        raise ModelFolderError(f"{path}: the 25 Hz speech tokenizer is not supported; use the 12 Hz "
                               "models (Qwen3-TTS-12Hz-*) and their speech_tokenizer/ folder.")
    if kind != MODEL_TYPE:
        raise ModelFolderError(f"{path} describes a {kind!r} model, not the Qwen3-TTS 12 Hz speech "
                               f"tokenizer (model_type {MODEL_TYPE!r}).")
    c = from_keys(CodecConfig, raw, str(path))
    if not isinstance(c.encoder_config, dict) or not isinstance(c.decoder_config, dict):
        raise ModelFolderError(f"{path} lacks encoder_config/decoder_config.")
    if c.input_sample_rate != c.output_sample_rate:
        raise ModelFolderError(f"{path}: different input and output sample rates are not supported.")
    return c


class SpeechTokenizer:
    """Audio <-> 16 codebooks at 12.5 frames/s (24 kHz). The encoder always runs in float32
    (quantisation is an argmin that half precision would flip); the decoder in `dtype`."""

    def __init__(self, config: CodecConfig, encoder, decoder: SpeechDecoder | None, dtype, device):
        self.config, self.encoder, self.decoder = config, encoder, decoder
        self.dtype, self.device = dtype, torch.device(device)
        self.sample_rate = config.output_sample_rate
        self.samples_per_frame = config.decode_upsample_rate
        self.num_codebooks = config.encoder_valid_num_quantizers
        self.codebook_size = int(config.decoder_config.get("codebook_size", CODEBOOK_SIZE))

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu", *, encoder: bool = True,
                        decoder: bool = True) -> "SpeechTokenizer":
        """Loads a standalone tokenizer folder or a model folder's `speech_tokenizer/`.
        `encoder=False` / `decoder=False` skip a half that is not needed."""
        folder = tokenizer_folder(folder)
        c = read_codec_config(folder)
        device = torch.device(device)
        files = weight_files(folder)
        dec = enc = None
        if decoder:
            dc = from_keys(DecoderConfig, c.decoder_config, f"{folder / 'config.json'} decoder_config")
            if dc.hidden_act != "silu" or dc.attention_bias:
                raise ModelFolderError(f"{folder / 'config.json'}: decoder hidden_act {dc.hidden_act!r} / "
                                       f"attention_bias {dc.attention_bias} are not supported.")
            if dc.samples_per_frame != c.decode_upsample_rate or dc.num_quantizers != c.encoder_valid_num_quantizers:
                raise ModelFolderError(f"{folder / 'config.json'}: decoder_config does not match "
                                       "decode_upsample_rate / encoder_valid_num_quantizers.")
            with torch.device("meta"):
                dec = SpeechDecoder(dc)
            load_into(dec, files, dtype, device, prefix="decoder.", what="speech decoder")
        if encoder:
            try:
                enc = MimiEncoder(c.encoder_config, c.encoder_valid_num_quantizers)
            except (TypeError, ValueError) as e:
                raise ModelFolderError(f"{folder / 'config.json'}: encoder_config is not a valid "
                                       f"Mimi config ({e}).") from None
            if enc.frame_samples != c.encode_downsample_rate:
                raise ModelFolderError(f"{folder / 'config.json'}: the encoder's frame is "
                                       f"{enc.frame_samples} samples, encode_downsample_rate says "
                                       f"{c.encode_downsample_rate}.")
            load_into(enc, files, torch.float32, device, prefix="encoder.", what="speech encoder")
            enc.to(device)  # the buffers Mimi computed at construction
        return cls(c, enc, dec, dtype, device)

    # ----------------------------------------------------------------------------------------
    # encode
    # ----------------------------------------------------------------------------------------
    def encode(self, waveforms, sample_rates: int | Sequence[int] = 24000, *,
               full_context: bool | str = "auto", block_frames: int = 750,
               conv_chunk_frames: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio -> (codes [B, 16, F] int64 on the model device, padded with PAD; lengths [B]).

        waveforms: a tensor [T] or [C, T] (one clip), [B, C, T] (a batch, e.g. ComfyUI AUDIO), or
        a list of [T] / [C, T] clips of any lengths; float samples in [-1, 1]. sample_rates: one
        rate for all clips or one per clip. Channels are averaged, audio is resampled to 24 kHz
        (torchaudio), F_i = ceil(samples_i / 1920). Every clip is encoded as if it were alone.
        Long clips are encoded in blocks (block_frames code frames, conv_chunk_frames 25 Hz frames
        per conv chunk): memory stays bounded and the codes are those of one whole pass.
        full_context: the official qwen-tts 0.1.1 (on transformers 4.57) lets the encoder
        transformer attend to the whole past; Mimi is built with a 250-frame (10 s) window, which
        bounds memory. "auto" (default) attends to the whole past for clips up to 60 s (exact
        official codes, e.g. for every voice-clone reference) and uses the window beyond that
        (bounded memory for hours of audio; codes differ from the official after 10 s).
        True/False force one or the other.
        """
        if self.encoder is None:
            raise InputError("This SpeechTokenizer was loaded with encoder=False.")
        clips = _audio_clips(waveforms, sample_rates, self.sample_rate)
        lengths = [math.ceil(x.numel() / self.samples_per_frame) for x in clips]
        codes = torch.full((len(clips), self.num_codebooks, max(lengths)), PAD, dtype=torch.long, device=self.device)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(clips):
            by_length.setdefault(x.numel(), []).append(i)
        for n, idx in by_length.items():   # clips of equal length share a batch, exactly
            batch = torch.stack([clips[i] for i in idx]) if len(idx) > 1 else clips[idx[0]][None]
            batch = batch.to(self.device)
            full = n <= FULL_CONTEXT_SECONDS * self.sample_rate if full_context == "auto" else bool(full_context)
            c = self.encoder(batch, block_frames, conv_chunk_frames, full)
            codes[idx, :, :c.shape[-1]] = c
        return codes, torch.tensor(lengths, dtype=torch.long)

    # ----------------------------------------------------------------------------------------
    # decode
    # ----------------------------------------------------------------------------------------
    def decode_chunk_frames(self, batch: int, device: torch.device | None = None) -> int:
        """Frames per decoder call for a batch on `device` (default: the decoder's): as many as
        keep the activations within `decode_budget` (at least 1, at most the official 300)."""
        per_frame = self.require_decoder().activation_bytes(1, self.dtype)
        budget = decode_budget(torch.device(device or self.device))
        return max(1, min(OFFICIAL_CHUNK, budget // max(1, batch * per_frame)))

    def decode_bytes(self, batch: int, frames: int, device: torch.device | None = None) -> int:
        """Working memory of `decode` for `batch` items of up to `frames` frames on `device`
        (default: the decoder's): one chunk's activations, plus the whole audio when that device
        is the CPU (the result is gathered there in float32)."""
        chunk = min(frames, self.decode_chunk_frames(batch, device))
        total = batch * self.require_decoder().activation_bytes(chunk, self.dtype)
        if (device or self.device).type == "cpu":
            total += batch * frames * self.samples_per_frame * 4
        return total

    def decode(self, codes, lengths: Sequence[int] | torch.Tensor | None = None, *,
               chunk_frames: int | None = None, mode: str = "exact",
               on_chunk: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
        """Codes -> list of float32 CPU waveforms [F_i * 1920] at 24 kHz.

        codes: [B, 16, T] (items end at `lengths`, or where only PAD frames follow), one item
        [16, T] / [T, 16], or a list of items of any lengths.
        mode "exact": the causal decode of the whole sequence, run through the streaming state in
        chunks of `chunk_frames` (default: `decode_chunk_frames(batch)`, which bounds the memory
        of the batch; the result is independent of the chunk size up to float rounding).
        `on_chunk(frames_done, frames_total)` runs before each chunk (the first time with 0
        done, not after the last) and may raise to stop.
        mode "official": qwen-tts 0.1.1's approximation, 300-frame chunks decoded independently
        with 25 frames of left context (the same as "exact" up to 300 frames).
        """
        dec = self.require_decoder()
        if mode not in ("exact", "official"):
            raise InputError(f"Unknown decode mode {mode!r}; use 'exact' or 'official'.")
        codes, lengths = self._code_batch(codes, lengths)
        b, _, t = codes.shape
        spf = self.samples_per_frame
        if mode == "exact":
            out = decode_chunks(dec, codes, {}, chunk_frames or self.decode_chunk_frames(b), spf, on_chunk)
        else:
            out = torch.empty(b, t * spf, dtype=torch.float32)
            with torch.inference_mode():
                for i in range(0, t, OFFICIAL_CHUNK):
                    if on_chunk is not None:
                        on_chunk(i, t)
                    ctx = min(i, OFFICIAL_CONTEXT)
                    wav = dec(codes[..., i - ctx:i + OFFICIAL_CHUNK])
                    out[:, i * spf:(i + OFFICIAL_CHUNK) * spf] = wav[:, ctx * spf:].float().cpu()
        return [out[i, :n * spf] for i, n in enumerate(lengths)]

    def streaming_decoder(self, batch_size: int = 1, chunk_frames: int = 1):
        """A StreamingDecoder: push frames as they are generated, get the finished audio."""
        return StreamingDecoder(self, batch_size, chunk_frames)

    def receptive_field(self) -> dict:
        """Decoder context: frames and samples of codes an output sample depends on."""
        return self.require_decoder().receptive_field()

    def require_decoder(self) -> SpeechDecoder:
        """The decoder, or an error that says it was not loaded (the streaming decoder asks too)."""
        if self.decoder is None:
            raise InputError("This SpeechTokenizer was loaded with decoder=False.")
        return self.decoder

    def _code_batch(self, codes, lengths=None) -> tuple[torch.Tensor, list[int]]:
        """Any accepted layout -> ([B, Q, T] long on the model device, PAD replaced by 0; lengths)."""
        if not isinstance(codes, (list, tuple)):
            x = _int_tensor(codes, "codes")
            if x.dim() != 2:
                return self._padded_batch(x, lengths)
            codes = [x]
        if not codes:
            raise InputError("No codes given (empty list).")
        if lengths is not None:
            raise InputError("`lengths` goes with a padded [B, 16, T] batch; items of a list or a "
                             "single item carry their own length.")
        names = ["codes"] if len(codes) == 1 else [f"codes item {i}" for i in range(len(codes))]
        items = [self._one_item(c, name) for c, name in zip(codes, names)]
        lengths = [x.shape[1] for x in items]
        batch = torch.zeros(len(items), self.num_codebooks, max(lengths), dtype=torch.long)
        for i, x in enumerate(items):
            batch[i, :, :x.shape[1]] = x
        return batch.to(self.device), lengths

    def _padded_batch(self, x: torch.Tensor, lengths) -> tuple[torch.Tensor, list[int]]:
        q = self.num_codebooks
        if x.dim() != 3 or q not in (x.shape[1], x.shape[2]):
            raise InputError(f"Codes have shape {tuple(x.shape)}; expected a batch [batch, {q}, "
                             f"frames], one item [{q}, frames] or [frames, {q}], or a list of items.")
        if x.shape[1] != q:
            x = x.transpose(1, 2)                           # official padded batch [B, T, 16]
        x = x.long().cpu()
        if lengths is None:                                 # items end before trailing PAD frames
            valid = (x != PAD).any(dim=1)                   # [B, T]
            lengths = [int(v.nonzero().max()) + 1 if v.any() else 0 for v in valid]
        else:
            lengths = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
            if len(lengths) != x.shape[0] or any(not 0 <= n <= x.shape[2] for n in lengths):
                raise InputError(f"lengths {lengths} do not fit codes of shape {tuple(x.shape)}.")
        for i, n in enumerate(lengths):
            what = "codes" if len(lengths) == 1 else f"codes item {i}"
            if n == 0:
                raise InputError(f"The {what} have 0 frames; there is nothing to decode.")
            _check_range(x[i, :, :n], self.codebook_size, what)
        frames = torch.arange(x.shape[2])[None, None, :]
        x = torch.where(frames < torch.tensor(lengths)[:, None, None], x, 0)
        return x.to(self.device), lengths

    def _one_item(self, codes, what: str) -> torch.Tensor:
        """One item [16, T] or [T, 16] -> checked [16, T] long (CPU)."""
        q = self.num_codebooks
        x = _int_tensor(codes, what)
        if x.dim() != 2 or q not in x.shape:
            raise InputError(f"The {what} have shape {tuple(x.shape)}; one item is [{q}, frames] "
                             f"or [frames, {q}].")
        x = (x if x.shape[0] == q else x.t()).long().cpu()
        if x.shape[1] == 0:
            raise InputError(f"The {what} have 0 frames; there is nothing to decode.")
        _check_range(x, self.codebook_size, what)
        return x

    def stream_codes(self, codes, batch_size: int) -> torch.Tensor:
        """Codes pushed to a stream: [B, 16, n], or [16, n] / [n, 16] when B == 1 -> checked
        [B, 16, n] on the model device (n may be 0)."""
        q = self.num_codebooks
        x = _int_tensor(codes, "codes")
        if x.dim() == 2 and batch_size == 1 and x.shape[0] != q and x.shape[1] == q:
            x = x.t()
        if x.dim() == 2 and batch_size == 1:
            x = x[None]
        if x.dim() != 3 or x.shape[0] != batch_size or x.shape[1] != q:
            raise InputError(f"Pushed codes have shape {tuple(x.shape)}; this stream takes "
                             f"[{batch_size}, {q}, frames]" + (f" or [{q}, frames]" if batch_size == 1 else "") + ".")
        _check_range(x, self.codebook_size, "pushed codes")
        return x.long().to(self.device)


def _int_tensor(codes, what: str) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor):
        try:
            codes = torch.as_tensor(codes)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"The {what} must be an integer tensor, got {type(codes).__name__}.") from None
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise InputError(f"The {what} have dtype {codes.dtype}; codes are integer codebook indices "
                         "(torch.long), not features or audio.")
    return codes


def _check_range(x: torch.Tensor, size: int, what: str) -> None:
    """x [Q, T] or [B, Q, T]: every code in [0, size)."""
    bad = codes_out_of_range(x, size)
    if bad is not None:
        hint = (f" Values of {size} and above are talker control tokens (e.g. end of speech): strip "
                "them before decoding." if bad.value >= size else
                f" {PAD} marks padding only after an item's last frame." if bad.value == PAD else "")
        raise InputError(f"The {what} hold {bad.count} value(s) outside [0, {size - 1}] "
                         f"(first: {bad.value} at index {bad.index}).{hint}")


def _audio_clips(waveforms, sample_rates, rate: int) -> list[torch.Tensor]:
    """Any accepted audio input -> list of mono float32 clips at `rate`."""
    if isinstance(waveforms, (list, tuple)):
        clips = list(waveforms)
    else:
        x = _float_audio(waveforms, "audio")
        clips = list(x) if x.dim() == 3 else [x]
    if not clips:
        raise InputError("No audio given (empty list or batch).")
    if isinstance(sample_rates, (list, tuple)):
        rates = list(sample_rates)
        if len(rates) != len(clips):
            raise InputError(f"{len(clips)} clips but {len(rates)} sample rates.")
    else:
        rates = [sample_rates] * len(clips)
    out = []
    for i, (x, sr) in enumerate(zip(clips, rates)):
        what = "audio" if len(clips) == 1 else f"audio clip {i}"
        x = _float_audio(x, what)
        if x.dim() == 2 and x.shape[0] > 16 >= x.shape[1]:
            raise InputError(f"The {what} has shape {tuple(x.shape)}, which looks like [samples, "
                             "channels]; give [channels, samples] (transpose it).")
        out.append(prepare(x, sr, what, rate))
    return out


def _float_audio(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"The {what} must be a tensor or array, got {type(x).__name__}.") from None
    if not x.is_floating_point():
        raise InputError(f"The {what} has {x.dtype} samples; give float samples in [-1, 1] "
                         "(for 16-bit PCM divide by 32768).")
    return x
