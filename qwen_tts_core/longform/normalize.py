"""Text normalisation before speech: dates, units and numbers written out the way a reader of
the language says them, emoji removed. Every step can be turned off (`Normalization`).

Numbers are spelled with the optional package `num2words` (LGPL-2.1, imported only if
installed, never bundled) for the nine languages it covers (en de fr es it pt ru ja ko), and by
our own reader for Chinese, which num2words lacks. Without num2words, numbers stay as digits (the
model reads digits itself, less reliably in some languages) and `notes()` says so.
Formats follow the language: 1,000.50 (English) is 1.000,50 in German, Spanish, Italian and
Portuguese and 1 000,50 in French and Russian; a number that does not fit its language's format
(a version 1.2.3, a time 10:30, a code MP3) is left alone.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from . import languages as langs


@dataclass(frozen=True)
class Normalization:
    numbers: bool = True      # 1.000,50 -> "eintausend Komma fünf null"; 3rd -> "third"
    dates: bool = True        # 2024-05-03 -> "May 3, 2024" (then numbers, if on)
    units: bool = True        # 5 km -> "5 kilometres"; 50 % -> "50 percent"; $5 -> "5 dollars"
    emoji: bool = True        # remove emoji and pictographs (the model would mumble them)

    @classmethod
    def off(cls) -> "Normalization":
        """Only whitespace and invisible characters are cleaned up."""
        return cls(numbers=False, dates=False, units=False, emoji=False)

    def notes(self, language: str) -> list[str]:
        """What the user should know about this normalisation for `language`."""
        if self.numbers and language != "chinese" and _num2words() is None:
            return ["Numbers are left as digits: install the optional package num2words "
                    "(pip install num2words) to have them written out in words."]
        return []


# ------------------------------------------------------------------ cleanup and emoji
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\ufeff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMOJI = re.compile(
    "[\U0001F000-\U0001FAFF\U0001F1E6-\U0001F1FF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF"
    "\uFE0E\uFE0F\u20E3\u200D\u3030\u303D\U000E0020-\U000E007F]+")
_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]{2,}")


def clean(text: str, emoji: bool = True) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", _INVISIBLE.sub("", text.replace("\t", " ")))
    if emoji:
        # keycaps (1️⃣) keep their digit; everything pictographic goes
        text = _EMOJI.sub(" ", text)
    text = text.translate(_FULLWIDTH_DIGITS)
    return _SPACES.sub(" ", text)


# ------------------------------------------------------------------ number words
_N2W = []


def _num2words():
    """num2words' function, or None when the package is not installed (looked up once)."""
    if not _N2W:
        try:
            from num2words import num2words
        except ImportError:
            num2words = None
        _N2W.append(num2words)
    return _N2W[0]


_ZH_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """Integer -> Chinese reading (万/亿 groups): 10 -> 十, 2024 -> 二千零二十四."""
    if n < 0:
        return "负" + chinese_number(-n)
    if n == 0:
        return "零"

    def below_10000(x: int) -> str:
        out, zero = "", False
        for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            d = x // value % 10
            if d:
                out += ("零" if zero and out else "") + _ZH_DIGITS[d] + unit
                zero = False
            else:
                zero = True
        return out

    groups, out = [], ""
    while n:
        groups.append(n % 10000)
        n //= 10000
    for i in reversed(range(len(groups))):
        g = groups[i]
        if g:
            if out and g < 1000:
                out += "零"
            out += below_10000(g) + ("", "万", "亿", "万亿")[i]
        elif out and not out.endswith("零"):
            out += "零"
    out = out.rstrip("零")
    return out[1:] if out.startswith("一十") else out


def _digits(s: str, language: str) -> str:
    """Digits read one by one (the fractional part of a decimal)."""
    if language == "chinese":
        return "".join(_ZH_DIGITS[int(d)] for d in s)
    sep = "" if language in ("japanese", "korean") else " "
    return sep.join(say_number(int(d), language) for d in s)


def say_number(n: int | Decimal, language: str, kind: str = "cardinal") -> str | None:
    """A number in words (`kind`: cardinal, ordinal or year), or None when no speller is
    available for the language."""
    if language == "chinese":
        if kind == "year":
            return "".join(_ZH_DIGITS[int(d)] for d in str(int(n)))
        return chinese_number(int(n))
    spell = _num2words()
    if spell is None:
        return None
    lang = langs.language(language)
    if kind == "year" and language not in ("english", "german"):
        kind = "cardinal"          # num2words writes Japanese years as era names
    try:
        return spell(int(n), lang=lang.code, to=kind)
    except Exception:              # num2words raises plain errors for numbers it cannot say
        return None


def _say_decimal(integer: str, fraction: str, language: str) -> str | None:
    head = say_number(int(integer), language)
    if head is None:
        return None
    if not fraction:
        return head
    word = langs.language(language).decimal_word
    sep = "" if language in ("chinese", "japanese") else " "
    return f"{head}{sep}{word}{sep}{_digits(fraction, language)}"


# ------------------------------------------------------------------ numbers in text
# What may not touch a number for it to be read as one: Latin and Cyrillic letters and digits
# (MP3, COVID-19, 1.2.3). CJK characters may: 价格是3.14元, 5km.
_ALNUM = "0-9A-Za-z\u00c0-\u024f\u0400-\u04ff"


def _number_re(lang: langs.Language) -> str:
    """A number in the language's own format: 1,000.50 / 1.000,50 / 1 000,50 / 3.14 / 42."""
    groups = "".join(re.escape(g) for g in lang.group_marks)
    dec = re.escape(lang.decimal_mark)
    return rf"(?P<int>\d{{1,3}}(?:[{groups}]\d{{3}})+|\d+)(?:{dec}(?P<frac>\d+))?"


def _number_pattern(lang: langs.Language) -> re.Pattern:
    return re.compile(rf"(?<![{_ALNUM}.,:\-])(?P<sign>-(?=\d))?" + _number_re(lang)
                      + rf"(?P<after>[.,:]?[{_ALNUM}]|-\d|\.(?!\s|$))?")


_PATTERNS: dict[str, re.Pattern] = {}
_EN_ORDINAL = re.compile(r"(?<![\w.,])(\d+)(?:st|nd|rd|th)\b")
_FR_ORDINAL = re.compile(r"(?<![\w.,])(\d+)(?:er|re|ère|e|ème|eme)\b")
_ROMANCE_ORDINAL = re.compile(r"(?<![\w.,])(\d+)\.?([ºª°])(?!\w)")
_DE_ORDINAL = re.compile(r"(?<![\w.,])(\d{1,3})\.(?=\s+(\w+))")
_RU_YEAR_WORD = re.compile(r"\s*(?:год|года|году|годом|годах|гг?\.)")
# Spanish and Italian shorten "uno"/"primero"/"tercero" before a noun: un kilómetro, tercer día
_APOCOPE = {
    "spanish": (re.compile(r"\b(\w*?)(uno|primero|tercero)(?= [^\W\d_])"),
                {"uno": "ún", "primero": "primer", "tercero": "tercer"}),
    "italian": (re.compile(r"\b()(uno)(?= [^\W\d_])"), {"uno": "un"}),
}
_DE_DATIVE = frozenset("am im vom zum beim dem den des einem einen eines jedem jeden zur ab bis seit".split())
_DE_NOMINATIVE = frozenset("der die das ein eine jede jeder jedes".split())


def _ordinals(text: str, language: str) -> str:
    def spell(m: re.Match, suffix: str = "") -> str:
        words = say_number(int(m.group(1)), language, "ordinal")
        return m.group(0) if words is None else words + suffix

    if language == "english":
        return _EN_ORDINAL.sub(spell, text)
    if language == "french":
        return _FR_ORDINAL.sub(lambda m: "premier" if m.group(1) == "1" and m.group(0).endswith("er")
                               else spell(m), text)
    if language in ("spanish", "italian", "portuguese"):
        return _ROMANCE_ORDINAL.sub(spell, text)
    if language == "german":
        lang = langs.language("german")

        def german(m: re.Match) -> str:
            before = text[max(0, m.start() - 20):m.start()].split()
            prev = before[-1].lower() if before else ""
            if m.group(2) not in lang.months and prev not in lang.ordinal_context:
                return m.group(0)          # a sentence ending in a number
            words = say_number(int(m.group(1)), language, "ordinal")
            if words is None:
                return m.group(0)
            # the adjective ending the article asks for: am dritten, der dritte, (ohne) dritter
            return words + ("n" if prev in _DE_DATIVE else "" if prev in _DE_NOMINATIVE else "r")

        return _DE_ORDINAL.sub(german, text)
    return text


def _cardinals(text: str, language: str) -> str:
    lang = langs.language(language)
    pattern = _PATTERNS.get(language) or _PATTERNS.setdefault(language, _number_pattern(lang))
    months_after = re.compile(r"\s*(?:" + "|".join(lang.months) + r")\b") if lang.months else None

    def spell(m: re.Match) -> str:
        if m.group("after"):
            return m.group(0)            # part of a version, time, code or foreign format
        integer = re.sub(r"\D", "", m.group("int"))
        frac = m.group("frac") or ""
        if language == "russian" and not frac and (
                (months_after and months_after.match(text, m.end())) or _RU_YEAR_WORD.match(text, m.end())):
            return m.group(0)            # "3 мая", "2024 года": ordinals in a case beyond us; the model reads them
        year = (language in ("english", "german") and not frac and not m.group("sign")
                and integer == m.group("int") and 1100 <= int(integer) <= 2099
                and not (language == "german" and int(integer) >= 2000))
        if language == "chinese" and not frac and text.startswith("年", m.end()):
            year = True
        if language == "korean" and not frac and integer in ("6", "10") and text.startswith("월", m.end()):
            return {"6": "유", "10": "시"}[integer]  # 유월, 시월: the two irregular month names
        if year:
            words = say_number(int(integer), language, "year")
        else:
            words = _say_decimal(integer, frac, language)
        if words is None:
            return m.group(0)
        if m.group("sign"):
            words = f"{lang.minus_word}{'' if language == 'chinese' else ' '}{words}"
        return words

    text = pattern.sub(spell, text)
    if language in _APOCOPE:
        apocope, short = _APOCOPE[language]
        text = apocope.sub(lambda m: m.group(1) + (
            "un" if m.group(2) == "uno" and not m.group(1) else short[m.group(2)]), text)
    return text


# ------------------------------------------------------------------ units and currencies
def _plural_index(value: Decimal, language: str, forms: int) -> int:
    if forms == 1:
        return 0
    whole = value == value.to_integral_value()
    n = int(value)
    if language == "russian" and forms == 3:
        if not whole:
            return 1
        if n % 10 == 1 and n % 100 != 11:
            return 0
        return 1 if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else 2
    if language == "french":
        return 0 if 0 <= value < 2 else 1
    return 0 if whole and n == 1 else 1


def _unit_word(unit, value: Decimal, language: str) -> str:
    forms = (unit,) if isinstance(unit, str) else unit
    return forms[_plural_index(value, language, len(forms))]


def _value(number: str, lang: langs.Language) -> Decimal | None:
    digits = "".join(ch for ch in number if ch.isdigit() or ch == lang.decimal_mark)
    try:
        return Decimal(digits.replace(lang.decimal_mark, ".")) if digits else None
    except InvalidOperation:
        return None


def _units(text: str, language: str) -> str:
    lang = langs.language(language)
    if not lang.units:
        return text
    number = _number_re(lang).replace("?P<int>", "?:").replace("?P<frac>", "?:")
    symbols = sorted((u for u in lang.units if u not in "$€£₽"), key=len, reverse=True)
    after = re.compile(rf"(?<![{_ALNUM}.,])(?P<num>{number})[ \u00a0]?(?P<unit>"
                       + "|".join(re.escape(u) for u in symbols) + rf")(?![{_ALNUM}/])")
    money_before = re.compile(rf"(?P<unit>[$€£₽])[ \u00a0]?(?P<num>{number})(?![{_ALNUM}])")
    money_after = re.compile(rf"(?<![{_ALNUM}.,])(?P<num>{number})[ \u00a0]?(?P<unit>[€₽])(?![{_ALNUM}])")
    cjk = language in ("chinese", "japanese", "korean")

    def say(m: re.Match) -> str:
        unit, num = m.group("unit"), m.group("num")
        if unit not in lang.units:
            return m.group(0)
        value = _value(num, lang)
        if value is None:
            return m.group(0)
        word = _unit_word(lang.units[unit], value, language)
        if language == "chinese" and unit == "%":
            return f"{word}{num}"                 # 百分之五十
        return f"{num}{'' if cjk else ' '}{word}"

    for pattern in (after, money_before, money_after):
        text = pattern.sub(say, text)
    return text


# ------------------------------------------------------------------ dates
_ISO_DATE = re.compile(rf"(?<![{_ALNUM}.\-/])(\d{{4}})-(\d{{1,2}})-(\d{{1,2}})(?![{_ALNUM}\-/])")
_NUMERIC_DATE = re.compile(rf"(?<![{_ALNUM}.\-/])(\d{{1,2}})([./])(\d{{1,2}})\2(\d{{4}})(?![{_ALNUM}/]|\.\d)")


def _say_date(year: int, month: int, day: int, language: str) -> str:
    lang = langs.language(language)
    if language in ("chinese", "japanese"):
        return f"{year}年{month}月{day}日"
    if language == "korean":
        return f"{year}년 {month}월 {day}일"
    name = lang.months[month - 1]
    if language == "english":
        return f"{name} {day}{_english_suffix(day)}, {year}"
    if language == "german":
        return f"{day}. {name} {year}"
    if language in ("spanish", "portuguese"):
        return f"{day} de {name} de {year}"
    if language == "russian":
        return f"{day} {name} {year} года"
    if language == "french":
        return f"{'1er' if day == 1 else day} {name} {year}"
    return f"{day} {name} {year}"           # italian


def _english_suffix(day: int) -> str:
    if 10 <= day % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _dates(text: str, language: str) -> str:
    def valid(y: int, m: int, d: int) -> bool:
        return 1 <= m <= 12 and 1 <= d <= 31 and 1000 <= y <= 2999

    def iso(m: re.Match) -> str:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        return _say_date(y, mo, d, language) if valid(y, mo, d) else m.group(0)

    def numeric(m: re.Match) -> str:
        a, sep, b, y = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        day, month = (b, a) if language == "english" and sep == "/" else (a, b)
        if month > 12 >= day:               # the other order is the only valid one
            day, month = month, day
        return _say_date(y, month, day, language) if valid(y, month, day) else m.group(0)

    return _NUMERIC_DATE.sub(numeric, _ISO_DATE.sub(iso, text))


# ------------------------------------------------------------------ all together
def normalize_text(text: str, language: str, options: Normalization | None = None) -> str:
    """Text as it should be said. `language` is a model language name (not "auto": resolve it
    first, e.g. with `languages.resolve`)."""
    options = options or Normalization()
    text = clean(text, emoji=options.emoji)
    if options.dates:
        text = _dates(text, language)
    if options.units:
        text = _units(text, language)
    if options.numbers:
        text = _cardinals(_ordinals(text, language), language)
    return text
