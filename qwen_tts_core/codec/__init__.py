"""The 12 Hz speech tokenizer (codec) of Qwen3-TTS: audio <-> 16 codebooks at 12.5 frames/s."""
from .streaming import StreamingDecoder
from .tokenizer import PAD, SpeechTokenizer

__all__ = ["SpeechTokenizer", "StreamingDecoder", "PAD"]
