"""How long a text takes to say: the one place that turns text into an expected duration and a
safe frame limit (used by `QwenTTS.generate` and by the long-form chunker).

Speech rate is counted per script, because a sentence can mix them (Chinese with English
words, Japanese kanji and kana): Latin/Cyrillic/Greek letters at the language's letter rate, Han
characters at about one syllable each (two morae in Japanese), kana at about one mora each,
Hangul at one syllable each, digits at a rate that allows for numbers being read out in full,
plus a short pause for each sentence and clause mark.
"""
from __future__ import annotations

import math
import re

FRAME_RATE = 12.5            # frames per second of audio

# Letters per second of ordinary narration (letters and digits only; spaces and punctuation are
# not counted). Measured rates of read speech: English ~150 words/min of ~5.5 letters ~= 14/s.
LETTERS_PER_SECOND = {
    "english": 14.0, "german": 14.5, "french": 14.5, "spanish": 15.0, "italian": 14.5,
    "portuguese": 14.5, "russian": 13.5,
    # Latin words inside CJK text are read at about the English rate
    "chinese": 13.0, "japanese": 13.0, "korean": 13.0, "auto": 14.0,
}
HAN_PER_SECOND = {"chinese": 4.6, "japanese": 4.0}    # other languages: the Chinese rate
KANA_PER_SECOND = 8.0
HANGUL_PER_SECOND = 6.2
DIGITS_PER_SECOND = 3.5                               # "2024" -> "two thousand twenty-four"
SENTENCE_PAUSE = 0.35                                 # seconds per sentence mark
CLAUSE_PAUSE = 0.12                                   # seconds per clause mark

# How generous the frame limit is: a slow speaker (SLACK x the expected time) plus a margin.
SLACK = 2.0
MARGIN_SECONDS = 3.0
MIN_LIMIT_SECONDS = 4.0

# Character ranges (for a regex [...] class) of kana (with half-width katakana) and of Hangul
# (syllables and jamo), shared with the long-form language guess.
KANA_RANGES = r"\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d"
HANGUL_RANGES = r"\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"

# Runs of one kind of character; han, kana and hangul come before the generic letter class.
_RUNS = re.compile(
    r"(?P<han>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+)"
    rf"|(?P<kana>[{KANA_RANGES}]+)"
    rf"|(?P<hangul>[{HANGUL_RANGES}]+)"
    r"|(?P<digit>[0-9\uff10-\uff19]+)"
    r"|(?P<sentence>[.!?\u2026\u3002\uff01\uff1f\uff0e]+)"
    r"|(?P<clause>[,;:\u3001\uff0c\uff1b\uff1a\u2014\u2013])"
    r"|(?P<letter>[^\W\d_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+)")


def count_units(text: str) -> dict[str, int]:
    """Counts of han, kana, hangul, digit and other letter characters, and of sentence marks
    (a run like "?!" counts once) and clause marks. Linear in the text."""
    counts = dict.fromkeys(("han", "kana", "hangul", "digit", "sentence", "clause", "letter"), 0)
    for m in _RUNS.finditer(text):
        kind = m.lastgroup
        counts[kind] += 1 if kind in ("sentence", "clause") else m.end() - m.start()
    return counts


def expected_seconds(text: str, language: str = "auto") -> float:
    """Expected duration of `text` read at an ordinary pace, in seconds."""
    lang = (language or "auto").lower()
    c = count_units(text)
    seconds = (c["letter"] / LETTERS_PER_SECOND.get(lang, LETTERS_PER_SECOND["auto"])
               + c["han"] / HAN_PER_SECOND.get(lang, HAN_PER_SECOND["chinese"])
               + c["kana"] / KANA_PER_SECOND
               + c["hangul"] / HANGUL_PER_SECOND
               + c["digit"] / DIGITS_PER_SECOND
               + c["sentence"] * SENTENCE_PAUSE + c["clause"] * CLAUSE_PAUSE)
    return seconds


def max_frames_for(text: str, language: str, cap: int) -> int:
    """A frame limit for one generation: generous enough for slow or instructed speech, short
    enough that a generation that never ends stops within seconds of where speech should have
    ended (instead of babbling up to the model's cap)."""
    seconds = max(MIN_LIMIT_SECONDS, SLACK * expected_seconds(text, language) + MARGIN_SECONDS)
    return max(1, min(int(cap), math.ceil(seconds * FRAME_RATE)))
