"""What differs between the ten languages for long-form text: the one table of abbreviations,
month names, number formats and unit words, and the guess of a text's language for "auto".

Language names are the model's (`config.languages`): chinese, english, german, italian,
portuguese, spanish, japanese, korean, french, russian (and auto).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from ..duration import HANGUL_RANGES, KANA_RANGES

LANGUAGES = ("chinese", "english", "german", "italian", "portuguese", "spanish", "japanese",
             "korean", "french", "russian")


@dataclass(frozen=True)
class Language:
    name: str
    code: str                                   # ISO 639-1 (num2words' language code)
    # Abbreviations (lower case, without the dot) after which a sentence never ends.
    titles: frozenset = frozenset()
    # Abbreviations that only mark a following number ("No. 5", "S. 12", "стр. 3").
    before_number: frozenset = frozenset()
    months: tuple = ()                          # 12 names as used in a date
    decimal_mark: str = "."
    group_marks: str = ","                      # thousands separators accepted in numbers
    decimal_word: str = "point"
    minus_word: str = "minus"
    # Words before "3." that make it an ordinal rather than a sentence end (German: "am 3. Mai").
    ordinal_context: frozenset = frozenset()
    units: dict = field(default_factory=dict)    # symbol -> (singular, plural) or a word


_COMMON_BEFORE_NUMBER = {"no", "nos", "nr", "n", "p", "pp", "vol", "art", "fig", "ch", "cap"}

_EN = Language(
    "english", "en",
    titles=frozenset("mr mrs ms mx dr prof sr jr st mt ft vs gen gov sen rep capt col lt sgt rev hon "
                     "messrs jan feb mar apr jun jul aug sep sept oct nov dec approx dept est "
                     "univ assn bros corp".split()),
    before_number=frozenset(_COMMON_BEFORE_NUMBER),
    months=("January", "February", "March", "April", "May", "June", "July", "August",
            "September", "October", "November", "December"),
    units={"%": ("percent", "percent"), "°C": ("degree Celsius", "degrees Celsius"),
           "°F": ("degree Fahrenheit", "degrees Fahrenheit"), "km/h": ("kilometre per hour", "kilometres per hour"),
           "km": ("kilometre", "kilometres"), "cm": ("centimetre", "centimetres"),
           "mm": ("millimetre", "millimetres"), "m": ("metre", "metres"), "kg": ("kilogram", "kilograms"),
           "mg": ("milligram", "milligrams"), "g": ("gram", "grams"), "ml": ("millilitre", "millilitres"),
           "l": ("litre", "litres"), "kWh": ("kilowatt hour", "kilowatt hours"),
           "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
           "€": ("euro", "euros"), "$": ("dollar", "dollars"), "£": ("pound", "pounds")},
)

_DE = Language(
    "german", "de",
    titles=frozenset("dr prof hr hrn fr frl str bzw ca vgl ggf evtl inkl exkl zzgl sog bspw geb gest "
                     "jh jhd mio mrd abs allg st dipl ing mag jan feb mär apr aug sep sept okt nov dez "
                     "ebd hl".split()),
    before_number=frozenset(_COMMON_BEFORE_NUMBER | {"s", "bd", "kap", "abs", "tel"}),
    months=("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
            "Oktober", "November", "Dezember"),
    decimal_mark=",", group_marks=". \u00a0\u202f", decimal_word="Komma", minus_word="minus",
    ordinal_context=frozenset("der die das dem den des am im vom zum zur beim ab bis seit vor nach "
                              "ein eine einem einen einer eines jeder jede jedes jeden jedem "
                              "zu bei um für fürs ins ans".split()),
    units={"%": "Prozent", "°C": "Grad Celsius", "°F": "Grad Fahrenheit", "km/h": "Kilometer pro Stunde",
           "km": "Kilometer", "cm": "Zentimeter", "mm": "Millimeter", "m": "Meter", "kg": "Kilogramm",
           "mg": "Milligramm", "g": "Gramm", "ml": "Milliliter", "l": "Liter", "kWh": "Kilowattstunden",
           "GB": "Gigabyte", "MB": "Megabyte", "€": "Euro", "$": "Dollar", "£": "Pfund"},
)

_FR = Language(
    "french", "fr",
    titles=frozenset("mme mmes mlle mlles mm dr pr me st ste av apr env cf chap éd cie bd ex "
                     "janv févr avr juil sept oct nov déc".split()),
    before_number=frozenset(_COMMON_BEFORE_NUMBER | {"t", "éd"}),
    months=("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
            "octobre", "novembre", "décembre"),
    decimal_mark=",", group_marks=" \u00a0\u202f.", decimal_word="virgule", minus_word="moins",
    units={"%": "pour cent", "°C": ("degré Celsius", "degrés Celsius"),
           "°F": ("degré Fahrenheit", "degrés Fahrenheit"), "km/h": ("kilomètre à l'heure", "kilomètres à l'heure"),
           "km": ("kilomètre", "kilomètres"), "cm": ("centimètre", "centimètres"),
           "mm": ("millimètre", "millimètres"), "m": ("mètre", "mètres"), "kg": ("kilogramme", "kilogrammes"),
           "mg": ("milligramme", "milligrammes"), "g": ("gramme", "grammes"), "ml": ("millilitre", "millilitres"),
           "l": ("litre", "litres"), "kWh": ("kilowattheure", "kilowattheures"),
           "GB": ("gigaoctet", "gigaoctets"), "MB": ("mégaoctet", "mégaoctets"),
           "€": ("euro", "euros"), "$": ("dollar", "dollars"), "£": ("livre", "livres")},
)

_ES = Language(
    "spanish", "es",
    titles=frozenset("sr sra srta sres sras dr dra lic ing arq ud uds vd vds dña excmo excma ilmo "
                     "ilma prof av avda atte dpto admón sto sta ej".split()),
    before_number=frozenset(_COMMON_BEFORE_NUMBER | {"pág", "págs", "núm", "núms"}),
    months=("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
            "octubre", "noviembre", "diciembre"),
    decimal_mark=",", group_marks=". \u00a0\u202f", decimal_word="coma", minus_word="menos",
    units={"%": "por ciento", "°C": ("grado Celsius", "grados Celsius"),
           "°F": ("grado Fahrenheit", "grados Fahrenheit"), "km/h": ("kilómetro por hora", "kilómetros por hora"),
           "km": ("kilómetro", "kilómetros"), "cm": ("centímetro", "centímetros"),
           "mm": ("milímetro", "milímetros"), "m": ("metro", "metros"), "kg": ("kilogramo", "kilogramos"),
           "mg": ("miligramo", "miligramos"), "g": ("gramo", "gramos"), "ml": ("mililitro", "mililitros"),
           "l": ("litro", "litros"), "kWh": ("kilovatio hora", "kilovatios hora"),
           "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
           "€": ("euro", "euros"), "$": ("dólar", "dólares"), "£": ("libra", "libras")},
)

_IT = Language(
    "italian", "it",
    titles=frozenset("sig sigg dott prof ing avv arch geom rag on sen gen col dr mons sant es ca "
                     "cfr gen febbr apr giu lug ago sett ott nov dic".split()),
    before_number=frozenset(_COMMON_BEFORE_NUMBER | {"pag", "pagg"}),
    months=("gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
            "settembre", "ottobre", "novembre", "dicembre"),
    decimal_mark=",", group_marks=". \u00a0\u202f", decimal_word="virgola", minus_word="meno",
    units={"%": "per cento", "°C": ("grado Celsius", "gradi Celsius"),
           "°F": ("grado Fahrenheit", "gradi Fahrenheit"), "km/h": ("chilometro orario", "chilometri orari"),
           "km": ("chilometro", "chilometri"), "cm": ("centimetro", "centimetri"),
           "mm": ("millimetro", "millimetri"), "m": ("metro", "metri"), "kg": ("chilogrammo", "chilogrammi"),
           "mg": ("milligrammo", "milligrammi"), "g": ("grammo", "grammi"), "ml": ("millilitro", "millilitri"),
           "l": ("litro", "litri"), "kWh": ("chilowattora", "chilowattora"),
           "GB": ("gigabyte", "gigabyte"), "MB": ("megabyte", "megabyte"),
           "€": ("euro", "euro"), "$": ("dollaro", "dollari"), "£": ("sterlina", "sterline")},
)

_PT = Language(
    "portuguese", "pt",
    titles=frozenset("sr sra srta dr dra prof profa eng exmo exma av sto sta ex ilmo ilma "
                     "jan fev mar abr mai jun jul ago set out nov dez".split()),
    before_number=frozenset(_COMMON_BEFORE_NUMBER | {"pág", "págs"}),
    months=("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
            "setembro", "outubro", "novembro", "dezembro"),
    decimal_mark=",", group_marks=". \u00a0\u202f", decimal_word="vírgula", minus_word="menos",
    units={"%": "por cento", "°C": ("grau Celsius", "graus Celsius"),
           "°F": ("grau Fahrenheit", "graus Fahrenheit"), "km/h": ("quilômetro por hora", "quilômetros por hora"),
           "km": ("quilômetro", "quilômetros"), "cm": ("centímetro", "centímetros"),
           "mm": ("milímetro", "milímetros"), "m": ("metro", "metros"), "kg": ("quilograma", "quilogramas"),
           "mg": ("miligrama", "miligramas"), "g": ("grama", "gramas"), "ml": ("mililitro", "mililitros"),
           "l": ("litro", "litros"), "kWh": ("quilowatt-hora", "quilowatts-hora"),
           "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
           "€": ("euro", "euros"), "$": ("dólar", "dólares"), "£": ("libra", "libras")},
)

_RU = Language(
    "russian", "ru",
    titles=frozenset("им ул пр просп пер проф акад доц св ген напр см ср рис табл гл тов гр г-н г-жа "
                     "янв февр апр авг сент окт нояб дек".split()),
    before_number=frozenset({"стр", "с", "гл", "п", "пп", "рис", "табл", "т", "№", "д", "кв", "ст"}),
    months=("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября",
            "октября", "ноября", "декабря"),
    decimal_mark=",", group_marks=" \u00a0\u202f", decimal_word="запятая", minus_word="минус",
    # Russian units take three plural forms: (one, few, many)
    units={"%": ("процент", "процента", "процентов"), "°C": ("градус Цельсия", "градуса Цельсия", "градусов Цельсия"),
           "km/h": ("километр в час", "километра в час", "километров в час"),
           "km": ("километр", "километра", "километров"), "cm": ("сантиметр", "сантиметра", "сантиметров"),
           "mm": ("миллиметр", "миллиметра", "миллиметров"), "m": ("метр", "метра", "метров"),
           "kg": ("килограмм", "килограмма", "килограммов"), "g": ("грамм", "грамма", "граммов"),
           "l": ("литр", "литра", "литров"), "€": ("евро", "евро", "евро"),
           "$": ("доллар", "доллара", "долларов"), "₽": ("рубль", "рубля", "рублей"),
           "км": ("километр", "километра", "километров"), "кг": ("килограмм", "килограмма", "килограммов"),
           "руб": ("рубль", "рубля", "рублей")},
)

_ZH = Language(
    "chinese", "zh", decimal_word="点", minus_word="负",
    units={"%": "百分之", "°C": "摄氏度", "km/h": "公里每小时", "km": "公里", "cm": "厘米", "mm": "毫米",
           "m": "米", "kg": "公斤", "g": "克", "ml": "毫升", "l": "升", "€": "欧元", "$": "美元",
           "£": "英镑"},
)

_JA = Language(
    "japanese", "ja", decimal_word="点", minus_word="マイナス",
    units={"%": "パーセント", "°C": "度", "km/h": "キロメートル毎時", "km": "キロメートル", "cm": "センチメートル",
           "mm": "ミリメートル", "m": "メートル", "kg": "キログラム", "g": "グラム", "ml": "ミリリットル",
           "l": "リットル", "€": "ユーロ", "$": "ドル", "£": "ポンド"},
)

_KO = Language(
    "korean", "ko", decimal_word="점", minus_word="마이너스",
    units={"%": "퍼센트", "°C": "도", "km/h": "킬로미터 퍼 아워", "km": "킬로미터", "cm": "센티미터",
           "mm": "밀리미터", "m": "미터", "kg": "킬로그램", "g": "그램", "ml": "밀리리터", "l": "리터",
           "€": "유로", "$": "달러", "£": "파운드"},
)

TABLE = {lang.name: lang for lang in (_EN, _DE, _FR, _ES, _IT, _PT, _RU, _ZH, _JA, _KO)}


def language(name: str) -> Language:
    return TABLE[name]


# ------------------------------------------------------------------ guessing the language
_SCRIPT_RUNS = {
    "kana": re.compile(rf"[{KANA_RANGES}]"),
    "hangul": re.compile(rf"[{HANGUL_RANGES}]"),
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f]"),
}
# Frequent short words that tell the Latin-script languages apart.
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in {
    "english": "the and of to is that it was for you with on are this be have not they",
    "german": "der die und das ist nicht ein eine zu mit den von sich auch auf ich es dem",
    "french": "le la les et est une des du que pas pour dans qui sur au avec il je ce",
    "spanish": "el la los las y es una del que por para con no se en lo su al como",
    "italian": "il lo la gli le e è una del della che per con non di un sono si",
    "portuguese": "o a os as e é uma do da que para com não em um no na se ao",
}.items()}
_WORD = re.compile(r"[^\W\d_]+")
GUESS_SAMPLE = 4000   # characters looked at: enough to be sure, bounded for megabyte texts


def guess_language(text: str) -> str:
    """The language whose splitting and normalisation rules fit `text` best. Scripts decide
    first (kana: Japanese; Hangul: Korean; Han: Chinese; Cyrillic: Russian); Latin text is told
    apart by frequent words, English when nothing decides."""
    sample = text[:GUESS_SAMPLE]
    counts = {k: len(p.findall(sample)) for k, p in _SCRIPT_RUNS.items()}
    if counts["kana"] and counts["kana"] + counts["han"] >= counts["latin"] / 4:
        return "japanese"
    if counts["hangul"] and counts["hangul"] >= counts["latin"] / 4:
        return "korean"
    if counts["han"] and counts["han"] >= counts["latin"] / 4:
        return "chinese"
    if counts["cyrillic"] > counts["latin"]:
        return "russian"
    words = [w.lower() for w in _WORD.findall(sample)]
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] > 0 else "english"


_KNOWN_SCRIPTS = re.compile("|".join(p.pattern for p in _SCRIPT_RUNS.values()))
UNKNOWN_SCRIPT_SHARE = 0.25   # letters in scripts none of the languages use, from which a note is due


def unsupported_script_note(text: str) -> str | None:
    """A one-line note when much of `text` (a quarter of its letters or more) is written in a
    script none of the model's ten languages use (Arabic, Hebrew, Greek, Thai, Devanagari, ...,
    told apart with the same script tables as the guess above): the model has not learnt to say
    it. None otherwise (also for Latin-script languages it does not know, which this cannot tell)."""
    letters = _WORD.findall(text[:GUESS_SAMPLE])
    total = sum(len(w) for w in letters)
    unknown = [ch for w in letters for ch in w if not _KNOWN_SCRIPTS.match(ch)]
    if not unknown or len(unknown) < UNKNOWN_SCRIPT_SHARE * total:
        return None
    names = [unicodedata.name(ch, "UNKNOWN").split()[0].title() for ch in unknown]
    script = max(set(names), key=names.count)
    return (f"Much of the text is in {script} script, which none of the model's languages use "
            f"({', '.join(n.title() for n in LANGUAGES)}): expect it to be mispronounced or skipped.")


def resolve(language: str | None, text: str) -> str:
    """The model's language name, or the guess for "auto"."""
    name = (language or "auto").strip().lower()
    if name == "auto":
        return guess_language(text)
    if name not in TABLE:
        from ..errors import InputError

        raise InputError(f"Unsupported language {language!r}. Choose one of: auto, {', '.join(LANGUAGES)}.")
    return name
