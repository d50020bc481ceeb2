"""The basic check of a text to be spoken, shared by the API, every node, fine-tuning data and
the long-form renderers (which also re-export it from `qwen_tts_core.longform.text`)."""
from __future__ import annotations

import re

from .errors import InputError

_SPEAKABLE = re.compile(r"[^\W_]")


def has_words(text: str) -> bool:
    """True when `text` holds a letter or a digit: something the model can say."""
    return bool(_SPEAKABLE.search(text))


def check_text(text, what: str = "The text") -> str:
    """The one check of a text to be spoken, used by every node, the API (`QwenTTS.check`) and
    the long-form renderers: a string with at least one letter or digit. Returns it stripped."""
    if text is not None and not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}.")
    text = (text or "").strip()
    if not text:
        raise InputError(f"{what} is empty; type something to say.")
    if not has_words(text):
        raise InputError(f"{what} has nothing to say: no letters or digits, only punctuation, symbols, "
                         "emoji or invisible characters. Type words to speak.")
    return text
