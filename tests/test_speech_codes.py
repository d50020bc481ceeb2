"""The speech-codes adapter: folder detection, code checks, encode/decode."""
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


def test_tokenizer_folder_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="Qwen/Qwen3-TTS-Tokenizer-12Hz"):
        speech_codes.tokenizer_folder(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelFolderError, match="neither"):
        speech_codes.tokenizer_folder(tmp_path)


@pytest.mark.parametrize("codes, message", [
    (torch.zeros(5, 8, dtype=torch.long), "expected \\[frames, 16\\]"),
    (torch.zeros(5, 16), "must be integers"),
    (torch.full((5, 16), 2048), "outside 0..2047"),
    (torch.full((5, 16), -1), "outside 0..2047"),
])
def test_check_codes_rejects_bad_codes(codes, message):
    with pytest.raises(InputError, match=message):
        speech_codes.check_codes(codes)


def test_speech_codes_context_must_match():
    c = speech_codes.SpeechCodes([torch.zeros(3, 16, dtype=torch.long)] * 2)
    assert c.context == [None, None] and c.frames == [3, 3] and c.seconds() == [0.24, 0.24]
    with pytest.raises(InputError):
        speech_codes.SpeechCodes([torch.zeros(3, 16, dtype=torch.long)], [None, None])


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
