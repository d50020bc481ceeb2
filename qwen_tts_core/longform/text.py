"""Long text -> chunks the model can say in one go, cut where a reader would pause.

Paragraphs (blank lines) are never joined. Inside a paragraph the text is cut into sentences
with rules that hold for the ten languages:
  - CJK sentence marks (。！？．) end a sentence on their own; Latin marks (. ! ? …) only before
    a space (so 3.14, 1.000,50 and example.com stay whole) and not before a lowercase word
    ("Stop!" she said / "wait... what");
  - a dot does not end a sentence after an initial or a one-letter abbreviation (J. R. R.,
    z. B., e.g., т. е.), a title (Mr., Dr., Sr., Mme., проф.), an abbreviation that precedes a
    number (No. 5, S. 12) or, in German, an ordinal ("am 3. Mai", "der 2. Weltkrieg");
  - closing quotes and brackets stay with their sentence, opening ones go with the next;
  - a line that starts a list item or follows a heading starts a new sentence.
Sentences are packed into chunks of at most `max_seconds` of expected speech. A sentence longer
than that is cut at clause marks (, ; : — and CJK ，、；：), then between words, then (text
with no spaces at all) between characters. Every step is linear in the text (1 MB of English:
about 1 s on one free CPU core).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..duration import expected_seconds
from ..errors import InputError
from ..text import check_text, has_words  # noqa: F401  (they lived here: old imports keep working)
from . import languages as langs

# How strongly the text breaks after a piece; the joiner turns these into pauses.
BREAKS = ("none", "clause", "sentence", "paragraph", "end")

DEFAULT_MAX_SECONDS = 20.0
MIN_MAX_SECONDS, MAX_MAX_SECONDS = 3.0, 120.0

_CJK_MARKS = set("。！？．‼⁇⁈⁉")
_PUNCTUATED = set(".!?…。！？．‼⁇⁈⁉,;:，、；：—–") | set("\"'”’»›)]}」』）】〕〉》")
_CLOSERS = "\"'”’»›)]}」』）】〕〉》"
_OPENERS = "\"'“‘«‹([{「『（【〔〈《¿¡„‚"
# French sets its closing guillemet apart: « Bonjour ! » dit-il.
_CANDIDATE = re.compile(
    r"(?P<marks>[.!?…。！？．‼⁇⁈⁉]+)(?P<close>[" + re.escape(_CLOSERS) + r"]*(?:[ \u00a0\u202f]+[»›]+)?)"
    r"(?P<space>\s*)")
_CLAUSE = re.compile(r"(?:[,;:]|\s[—–]|—)\s+|[，、；：]\s*")
_PARAGRAPH = re.compile(r"\n[ \t\u3000]*\n\s*")
_LIST_ITEM = re.compile(r"\n[ \t]*(?:[-*•·–—]|\d{1,3}[.)]|[a-zA-Z][.)])\s")
_WORD_BEFORE = re.compile(r"([^\W_](?:[^\W_]|[.\-'’](?=[^\W_]))*)$")
_WORD_AFTER = re.compile(r"[^\W_]+")
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9d]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_LOOKBACK = 40   # characters looked at before a dot: enough for any abbreviation and the word before it


@dataclass(frozen=True)
class Piece:
    """A sentence, or part of a long one, and how strongly the text breaks after it."""
    text: str
    brk: str
    seconds: float          # expected duration of speech


@dataclass(frozen=True)
class Chunk:
    """What one generation says."""
    index: int
    text: str
    pause_after: str        # one of BREAKS: the break between this chunk and the next
    seconds: float          # expected duration of speech


def paragraphs(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]


def _is_cjk(ch: str) -> bool:
    return bool(_CJK_CHAR.match(ch))


def _next_letter(text: str, i: int) -> str:
    """The first character at or after i that is not an opening quote or bracket ("" at end)."""
    n = len(text)
    while i < n and text[i] in _OPENERS:
        i += 1
    return text[i] if i < n else ""


def _ends_sentence(text: str, m: re.Match, lang: langs.Language) -> bool:
    marks, after = m.group("marks"), m.end()
    nxt = _next_letter(text, after)
    if _CJK_MARKS.intersection(marks):
        # 「はい。」と言った / “好的。”他说: a quoted sentence inside a longer one
        following = text[after:after + 1]
        return not (m.group("close") and following and _is_cjk(following))
    if not nxt:
        return True
    if not m.group("space"):
        # "3.14", "example.com", "U.S.A": no break; "Hello.你好": a break before CJK text
        return _is_cjk(nxt) and m.start() > 0 and not text[m.start() - 1].isdigit()
    if nxt.islower():
        return False
    if set(marks) != {"."}:
        return True            # ! ? and ellipses (…) before a capital or a digit
    if len(marks) > 1:
        return True            # "..." before a capital
    before = _WORD_BEFORE.search(text, max(0, m.start() - _LOOKBACK), m.start())
    if before is None:
        return True
    word = before.group(1)
    low = word.lower()
    if len(word) == 1 and word.isalpha():
        return False           # an initial or a one-letter abbreviation
    if "." in word:
        return False           # e.g / U.S / z.B: dotted abbreviations
    if low in lang.titles:
        return False
    if nxt.isdigit() and low in lang.before_number:
        return False
    if word.isdigit() and len(word) <= 3 and lang.ordinal_context:
        following = _WORD_AFTER.search(text, after)
        if following and following.group(0) in lang.months:
            return False
        previous = _WORD_BEFORE.search(text, max(0, before.start() - _LOOKBACK), before.start() - 1)
        if previous and previous.group(1).lower() in lang.ordinal_context:
            return False
    return True


def _lines_to_sentences(paragraph: str) -> str:
    """Single line breaks: a list item or a line after an unpunctuated heading starts a new
    sentence (the line break is kept for `split_sentences` to cut at), any other line break is
    a space (wrapped prose)."""
    if "\n" not in paragraph:
        return paragraph
    out = []
    lines = paragraph.split("\n")
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        if out:
            prev = out[-1]
            starts_item = bool(_LIST_ITEM.match("\n" + line + " "))
            heading = prev[-1] not in ".!?…。！？．,;:，、；：" and (
                line[0].isupper() or line[0].isdigit() or _is_cjk(line[0]) or _is_cjk(prev[-1]))
            out.append("\n" if starts_item or heading else " ")
        out.append(line)
    return "".join(out)


def split_sentences(paragraph: str, language: str) -> list[str]:
    """One paragraph -> its sentences (stripped, in order, nothing dropped but spaces)."""
    lang = langs.language(language)
    text = _lines_to_sentences(paragraph)
    out: list[str] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        if _ends_sentence(text, m, lang):
            end = m.end("close")
            out.append(text[start:end])
            start = m.end()
    out.append(text[start:])
    # forced breaks (list items, headings) were kept as "\n"
    sentences = [s.strip() for part in out for s in part.split("\n") if s.strip()]
    return _merge_markers(sentences)


def _merge_markers(sentences: list[str]) -> list[str]:
    """A "sentence" without a letter ("1.", "2024.", "—") is a list number or a stray mark:
    it is said with the next sentence (or the previous one at the end)."""
    out: list[str] = []
    carry = ""
    for s in sentences:
        if not any(ch.isalpha() for ch in s):
            carry = f"{carry} {s}".strip()
            continue
        out.append(f"{carry} {s}".strip() if carry else s)
        carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def _join(a: str, b: str) -> str:
    if not a:
        return b
    if _is_cjk(a[-1]) or a[-1] in _CJK_MARKS or a[-1] in "，、；：」』）":
        return a + b
    return f"{a} {b}"


def _cut_long(sentence: str, language: str, max_seconds: float) -> list[Piece]:
    """A sentence longer than max_seconds -> clause parts, then word or character parts."""
    cuts = [m.end() for m in _CLAUSE.finditer(sentence)]
    texts = [sentence[a:b].strip() for a, b in zip([0] + cuts, cuts + [len(sentence)])]
    parts = [_piece(t, "clause", language) for t in texts if t]
    parts[-1] = Piece(parts[-1].text, "sentence", parts[-1].seconds)
    out: list[Piece] = []
    for p in _pack(parts, max_seconds):
        seconds = p.seconds
        if seconds <= max_seconds:
            out.append(p)
            continue
        # Still too long: cut at spaces (or anywhere, for text without spaces) so that every
        # part stays under the limit; the expected rate of the whole part sizes the cuts.
        text = p.text
        width = max(1, int(len(text) * max_seconds / seconds))
        start = 0
        while len(text) - start > width:
            cut = text.rfind(" ", start + width // 2, start + width + 1)
            cut = cut if cut > start else start + width
            out.append(_piece(text[start:cut].strip(), "none", language))
            start = cut
        if text[start:].strip():
            out.append(_piece(text[start:].strip(), p.brk, language))
    return [p for p in out if p.text]


def _piece(text: str, brk: str, language: str) -> Piece:
    return Piece(text, brk, expected_seconds(text, language))


def _pack(pieces: list[Piece], max_seconds: float) -> list[Piece]:
    """Greedily joins consecutive pieces while they fit in max_seconds. A piece without final
    punctuation (a heading, a list item) ends its chunk: joined, it would run into the next."""
    out: list[Piece] = []
    text, seconds, brk = "", 0.0, "none"
    for p in pieces:
        if text and (seconds + p.seconds > max_seconds or text[-1] not in _PUNCTUATED):
            out.append(Piece(text, brk, seconds))
            text, seconds = "", 0.0
        text, seconds, brk = _join(text, p.text), seconds + p.seconds, p.brk
    if text:
        out.append(Piece(text, brk, seconds))
    return out


def chunk_text(text: str, language: str = "auto", max_seconds: float = DEFAULT_MAX_SECONDS) -> list[Chunk]:
    """Text of any length -> chunks of at most `max_seconds` of expected speech, each made of
    whole sentences where possible. `language` picks the rules ("auto": guessed from the text)."""
    check_text(text)
    if not MIN_MAX_SECONDS <= float(max_seconds) <= MAX_MAX_SECONDS:
        raise InputError(f"The chunk length must be between {MIN_MAX_SECONDS:.0f} and "
                         f"{MAX_MAX_SECONDS:.0f} seconds (got {max_seconds}).")
    language = langs.resolve(language, text)
    pieces: list[Piece] = []
    for para in paragraphs(text):
        para = _SPACES.sub(" ", para)
        packed, run = [], []
        for s in split_sentences(para, language):
            piece = _piece(s, "sentence", language)
            if piece.seconds <= max_seconds:
                run.append(piece)
                continue
            # a sentence too long for one chunk starts its own chunks: cut at its end first
            packed += _pack(run, max_seconds) + _cut_long(s, language, max_seconds)
            run = []
        packed += _pack(run, max_seconds)
        packed[-1] = Piece(packed[-1].text, "paragraph", packed[-1].seconds)
        pieces += packed
    pieces[-1] = Piece(pieces[-1].text, "end", pieces[-1].seconds)
    return [Chunk(i, p.text, p.brk, p.seconds) for i, p in enumerate(pieces)]
