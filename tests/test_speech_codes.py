"""The speech-codes adapter: folder detection, code checks, encode/decode."""
import re
import types

import pytest
import torch

from conftest import AUDIO, MODELS
from qwen_tts_core import speech_codes
from qwen_tts_core.audio import read_wav
from qwen_tts_core.errors import InputError, ModelFolderError

pytestmark = pytest.mark.core


def test_tokenizer_folder_of_standalone_and_model_folders():
    assert speech_codes.tokenizer_folder(MODELS / "Tiny-Tokenizer-12Hz") == MODELS / "Tiny-Tokenizer-12Hz"
    assert speech_codes.tokenizer_folder(MODELS / "Tiny-Base") == MODELS / "Tiny-Base" / "speech_tokenizer"


def test_the_config_decides_which_folder_holds_the_tokenizer(tmp_path):
    """Where the two earlier copies of tokenizer_folder disagreed: a standalone tokenizer folder
    that also holds a speech_tokenizer/ subfolder (here one the loader would refuse) is the
    tokenizer itself, as its config.json says; a model folder that lost its config.json still
    has a whole tokenizer in speech_tokenizer/. The ComfyUI loader and the core share the answer."""
    import json

    from qwen_tts_core.codec import SpeechTokenizer

    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for f in (MODELS / "Tiny-Tokenizer-12Hz").iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "speech_tokenizer").mkdir()
    (folder / "speech_tokenizer" / "config.json").write_text(json.dumps({"model_type": "qwen3_tts_tokenizer_25hz"}))
    assert speech_codes.tokenizer_folder(folder) == folder
    assert SpeechTokenizer.from_pretrained(folder).num_codebooks == 16     # not the 25 Hz one below it
    model = tmp_path / "model"
    model.mkdir()
    (model / "speech_tokenizer").symlink_to(MODELS / "Tiny-Base" / "speech_tokenizer", target_is_directory=True)
    assert speech_codes.tokenizer_folder(model) == model / "speech_tokenizer"


def test_tokenizer_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ModelFolderError, match=re.escape(
            f"Speech tokenizer folder not found: {missing}. Download Qwen/Qwen3-TTS-Tokenizer-12Hz into that "
            "folder (or pick a Qwen3-TTS model folder, which ships its own).")):
        speech_codes.tokenizer_folder(missing)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelFolderError, match=re.escape(
            f"{tmp_path} is neither a Qwen3-TTS speech tokenizer (model_type 'qwen3_tts_tokenizer_12hz') nor "
            "a Qwen3-TTS model folder (its config.json says 'llama').")):
        speech_codes.tokenizer_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_tts"}')          # a model without it
    with pytest.raises(ModelFolderError, match=re.escape(
            f"{tmp_path} has no speech_tokenizer/ subfolder. Every Qwen3-TTS checkpoint ships one: download "
            "the whole model repository, including speech_tokenizer/.")):
        speech_codes.tokenizer_folder(tmp_path)


@pytest.mark.parametrize("codes, message", [
    (torch.zeros(5, 8, dtype=torch.long), r"^The codes have shape \(5, 8\); expected \[frames, 16\].$"),
    ([[0] * 16] * 5, r"^The codes have shape list; expected \[frames, 16\].$"),
    (torch.zeros(5, 16), r"^The codes must be integers, got torch.float32.$"),
    (torch.full((5, 16), 2048), r"^The codes hold values outside 0..2047; they are not Qwen3-TTS 12 Hz speech codes.$"),
    (torch.full((5, 16), -1), "outside 0..2047"),
])
def test_check_codes_rejects_bad_codes(codes, message):
    with pytest.raises(InputError, match=message):
        speech_codes.check_codes(codes)


def test_check_codes_gives_int64():
    codes = torch.arange(32, dtype=torch.int32).reshape(2, 16)
    out = speech_codes.check_codes(codes)
    assert out.dtype == torch.int64 and torch.equal(out, codes.long())


def test_speech_codes_context_must_match():
    c = speech_codes.SpeechCodes([torch.zeros(3, 16, dtype=torch.long)] * 2)
    assert c.context == [None, None] and c.frames == [3, 3] and c.seconds() == [0.24, 0.24]
    with pytest.raises(InputError, match=r"^SpeechCodes: one context entry per item is needed.$"):
        speech_codes.SpeechCodes([torch.zeros(3, 16, dtype=torch.long)], [None, None])


class _Tokenizer:
    """A tokenizer object that is not a torch module (as SpeechTokenizer): modules as attributes
    and the device it puts inputs on."""

    def __init__(self):
        self.encoder, self.decoder, self.device, self.name = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3), "cuda:1", "x"


def test_modules_of_a_tokenizer_and_the_device_follows_them():
    tok = _Tokenizer()
    group = speech_codes.modules(tok)
    assert isinstance(group, torch.nn.ModuleDict) and dict(group) == {"encoder": tok.encoder, "decoder": tok.decoder}
    speech_codes.follow_modules(tok)                  # its modules are on the CPU: so is its device now
    assert tok.device == torch.device("cpu")
    module = torch.nn.Linear(2, 2)
    assert speech_codes.modules(module) is module
    with pytest.raises(TypeError, match=r"^SimpleNamespace holds no torch modules.$"):
        speech_codes.modules(types.SimpleNamespace(device="cpu"))


def test_load_speech_tokenizer_passes_dtype_and_device(monkeypatch):
    from qwen_tts_core.codec import SpeechTokenizer

    calls = []
    monkeypatch.setattr(SpeechTokenizer, "from_pretrained", lambda folder, **kw: calls.append((folder, kw)))
    speech_codes.load_speech_tokenizer(MODELS / "Tiny-Base", dtype=torch.bfloat16, device="cuda:1")
    assert calls == [(MODELS / "Tiny-Base" / "speech_tokenizer", {"dtype": torch.bfloat16, "device": "cuda:1"})]


def test_encode_decode_round_trip_shapes():
    tok = speech_codes.load_speech_tokenizer(MODELS / "Tiny-Tokenizer-12Hz")
    wav, rate = read_wav(AUDIO / "stereo_44k.wav")                  # stereo, 44.1 kHz
    codes = speech_codes.encode(tok, wav, rate)
    seconds = wav.shape[-1] / rate
    assert codes.dtype == torch.int64 and codes.shape[1] == 16
    assert abs(codes.shape[0] - seconds * 12.5) <= 2
    assert int(codes.min()) >= 0 and int(codes.max()) < 2048
    audio = speech_codes.decode(tok, [codes])[0]
    assert audio.dtype == torch.float32 and audio.shape == (codes.shape[0] * 1920,)
    assert torch.isfinite(audio).all()
    # context codes are decoded in front and cut off again
    ctx = speech_codes.decode(tok, speech_codes.SpeechCodes([codes[5:]], [codes[:5]]))[0]
    assert ctx.shape == ((codes.shape[0] - 5) * 1920,)


@pytest.mark.parametrize("frames", [15, 16, 17])
def test_decode_reads_items_time_major_at_every_length(frames):
    """A [16, 16] item is square: it must still be read as [frames, 16] (time-major). The decoder
    is causal, so an item's audio equals the start of a longer item's audio with the same frames."""
    tok = speech_codes.load_speech_tokenizer(MODELS / "Tiny-Tokenizer-12Hz")
    codes = torch.randint(0, 2048, (40, 16), generator=torch.Generator().manual_seed(frames))
    short, long = speech_codes.decode(tok, [codes[:frames], codes])
    assert short.shape == (frames * 1920,)
    assert (short - long[: frames * 1920]).abs().max() < 1e-3       # transposed: ~1.5


def test_encode_and_decode_edges():
    """One frame of audio is enough to encode and a 1-frame item decodes; shorter audio, 0 frames,
    bad context codes and damaged audio get their messages."""
    tok = speech_codes.load_speech_tokenizer(MODELS / "Tiny-Tokenizer-12Hz")
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    one = speech_codes.encode(tok, wav[:, :1920], rate)
    assert one.shape == (1, 16) and one.dtype == torch.int64
    assert speech_codes.decode(tok, [one])[0].shape == (1920,)
    with pytest.raises(InputError, match=r"^The audio to encode is 42 ms long; one code frame needs 80 ms.$"):
        speech_codes.encode(tok, wav[:, :1000], rate)
    with pytest.raises(InputError, match="one code frame needs"):
        speech_codes.encode(tok, wav[:, :1919], rate)
    with pytest.raises(InputError, match=r"^The audio to encode contains 1 NaN/inf samples"):
        speech_codes.encode(tok, torch.cat([wav[:, :4000], torch.full((1, 1), float("nan"))], dim=1), rate)
    with pytest.raises(InputError, match=r"^Nothing to decode: an item has 0 frames.$"):
        speech_codes.decode(tok, [one, one[:0]])
    with pytest.raises(InputError, match=r"^The context codes have shape \(3, 8\)"):
        speech_codes.decode(tok, speech_codes.SpeechCodes([one], [torch.zeros(3, 8, dtype=torch.long)]))
