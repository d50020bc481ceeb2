"""Long-form text: sentence boundaries in the ten languages, chunking (any text, any length,
nothing lost), and normalisation of numbers, dates and units."""
import re

import pytest

from qwen_tts_core import InputError
from qwen_tts_core.duration import expected_seconds
from qwen_tts_core.longform import normalize as norm
from qwen_tts_core.longform.languages import guess_language
from qwen_tts_core.longform.normalize import Normalization, chinese_number, normalize_text
from qwen_tts_core.longform.text import DEFAULT_MAX_SECONDS, chunk_text, split_sentences

pytestmark = pytest.mark.core

# ------------------------------------------------------------------ sentence boundaries
SENTENCES = {
    "english": ['Mr. Smith paid $3.14 for it.', 'Then he left...', 'Wait... what?',
                '"Stop!" she said.', 'J. R. R. Tolkien wrote e.g. this.', 'It was No. 5 on the list.',
                'Really?!', "It's 1,000.50 dollars.", '(Yes.)'],
    "german": ['Am 3. Mai kam er.', 'Der Preis war 1.000,50 Euro, d. h. teuer.',
               'Er wurde im 19. Jahrhundert geboren.', 'Im Jahr 1990.', 'Dann ging er.',
               'Das ist z. B. gut.', 'Siehe S. 12 dazu.', 'Dr. Müller kommt.'],
    "french": ['M. Dupont est arrivé.', 'Il a payé 3,14 €.', '« Bonjour ! » dit-il.', "C'est fini…",
               'Mme Martin aussi.'],
    "spanish": ['¿Qué hora es?', 'Son las 3.', 'El Sr. García llegó.', '¡Hola!', 'Cuesta 1.000,50 euros.'],
    "italian": ['Il Sig. Rossi è arrivato.', 'Costa 1.000,50 euro.', 'Va bene?', 'Sì.'],
    "portuguese": ['O Sr. Silva chegou.', 'Custa 3,50 reais.', 'Tudo bem?', 'Sim.'],
    "russian": ['А. С. Пушкин родился в 1799 г. в Москве.', 'Это было, т. е. давно.',
                'Проф. Иванов пришёл.', 'Как дела?', 'Хорошо!'],
    "chinese": ['今天天气很好。', '我们去公园散步吧！', '你觉得怎么样？', '“好的。”他说。', '价格是3.14元。'],
    "japanese": ['今日はいい天気ですね。', '公園に行きましょう！', '「はい。」と彼は言った。', '値段は3.14円です。'],
    "korean": ['오늘 날씨가 좋네요.', '공원에 갑시다!', '어떻게 생각해요?', '가격은 3.14원입니다.'],
}


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_sentence_boundaries_per_language(language):
    expected = SENTENCES[language]
    sep = "" if language in ("chinese", "japanese") else " "
    assert split_sentences(sep.join(expected), language) == expected


def test_line_breaks_headings_and_list_items():
    text = "Chapter 1\nIt was a dark\nand stormy night.\n1. First item\n2. Second item"
    assert split_sentences(text, "english") == [
        "Chapter 1", "It was a dark and stormy night.", "1. First item", "2. Second item"]


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_chunks_keep_every_character_in_order(language):
    sep = "" if language in ("chinese", "japanese") else " "
    text = (sep.join(SENTENCES[language]) + "\n\n") * 6
    chunks = chunk_text(text, language, max_seconds=4)
    assert len(chunks) > 6                               # packed, but not into one
    squash = lambda s: re.sub(r"\s+", "", s)             # noqa: E731
    assert squash("".join(c.text for c in chunks)) == squash(text)
    assert all(c.seconds <= 4 for c in chunks)
    # paragraphs are never joined: each paragraph's last chunk says so
    assert sum(c.pause_after in ("paragraph", "end") for c in chunks) == 6
    assert chunks[-1].pause_after == "end"


def test_sentences_are_packed_up_to_the_limit():
    sentence = "This sentence takes about two seconds."
    chunks = chunk_text(" ".join([sentence] * 20), "english", max_seconds=10)
    per_chunk = {c.text.count(sentence) for c in chunks[:-1]}
    assert per_chunk == {int(10 // expected_seconds(sentence, "english"))}
    assert all(c.pause_after == "sentence" for c in chunks[:-1])


def test_text_without_sentence_punctuation_is_cut_at_clauses_then_words():
    words = ["w" + "".join("abcdefghij"[int(d)] for d in str(i)) for i in range(400)]  # wa wb .. wjj
    clauses = ", ".join(" ".join(words[i:i + 10]) for i in range(0, 400, 10))
    chunks = chunk_text(clauses, "english", max_seconds=8)
    assert all(c.seconds <= 8 for c in chunks)
    assert [c.pause_after for c in chunks[:-1]] == ["clause"] * (len(chunks) - 1)
    no_marks = chunk_text(" ".join(words), "english", max_seconds=8)
    assert {c.pause_after for c in no_marks[:-1]} == {"none"}
    assert " ".join(c.text for c in no_marks).split() == words  # cut between words only
    cjk = chunk_text("天" * 500, "chinese", max_seconds=8)      # no spaces at all
    assert "".join(c.text for c in cjk) == "天" * 500 and all(c.seconds <= 8 for c in cjk)


def test_emoji_and_mixed_scripts():
    text = "Hello 👋🏽 world! 我喜欢Python。Das ist gut 🎉. Привет, мир! 안녕하세요. こんにちは。"
    clean = normalize_text(text, "english")
    assert not re.search("[\U0001F000-\U0001FAFF]", clean)
    assert split_sentences(clean, "english") == [
        "Hello world!", "我喜欢Python。", "Das ist gut .", "Привет, мир!", "안녕하세요.", "こんにちは。"]
    kept = normalize_text(text, "english", Normalization.off())
    assert "👋🏽" in kept and len(chunk_text(kept, "english")) == 1
    with pytest.raises(InputError, match="nothing to say"):
        chunk_text(normalize_text("🎉🎉 👍 …", "english"), "english")


@pytest.mark.parametrize("bad", ["", "  \n\n ", None])
def test_empty_text(bad):
    with pytest.raises(InputError, match="empty"):
        chunk_text(bad, "english")


def test_bad_language_and_limits():
    with pytest.raises(InputError, match="Unsupported language 'klingon'"):
        chunk_text("Hello.", "klingon")
    with pytest.raises(InputError, match="between 3 and 120 seconds"):
        chunk_text("Hello.", "english", max_seconds=1)


def test_megabyte_text_is_chunked_whole():
    """A 1 MB text (abbreviations, decimals, quotes, ellipses) becomes thousands of chunks that
    keep every word, in order, each within the length limit; text without punctuation is cut
    too. How long that takes is measured by bench/longform_text.py, not asserted here."""
    base = ("Mr. Smith paid $3.14 for it. Then he left... \"Stop!\" she said, and J. R. R. Tolkien "
            "wrote e.g. this; it was No. 5 on the list.\n\n")
    big = (base * (1_000_000 // len(base) + 1))[:1_000_000]
    chunks = chunk_text(big, "english")
    assert len(chunks) > 5000
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert " ".join(c.text for c in chunks).split() == big.split()
    assert max(c.seconds for c in chunks) <= DEFAULT_MAX_SECONDS
    no_punctuation = "word " * 200_000
    cut = chunk_text(no_punctuation, "english")
    assert len(cut) > 1000 and sum(len(c.text.split()) for c in cut) == 200_000


def test_auto_language_guess():
    assert guess_language("Der Hund und die Katze sind nicht hier.") == "german"
    assert guess_language("Le chat est sur la table avec le chien.") == "french"
    assert guess_language("El perro y el gato están en la casa para comer.") == "spanish"
    assert guess_language("今日はいい天気ですね。") == "japanese"
    assert guess_language("今天天气很好。") == "chinese"
    assert guess_language("안녕하세요.") == "korean"
    assert guess_language("Привет, мир!") == "russian"
    assert guess_language("Hello, world!") == "english"
    assert [c.text for c in chunk_text("Am 3. Mai kam der Hund. Er war nicht allein.", "auto",
                                       max_seconds=3)] == ["Am 3. Mai kam der Hund.", "Er war nicht allein."]


# ------------------------------------------------------------------ normalisation
NORMALIZED = {
    "english": ("On 2024-05-03 he paid $3.14 for 1,000.50 kg at 20 °C, 50% off; he came 3rd in "
                "1990 (v1.2.3 at 10:30, MP3, call 555-1234) -5 degrees.",
                "On May third, twenty twenty-four he paid three point one four dollars for one "
                "thousand point five zero kilograms at twenty degrees Celsius, fifty percent off; he "
                "came third in nineteen ninety (v1.2.3 at 10:30, MP3, call 555-1234) minus five degrees."),
    "german": ("Am 3. Mai 2024 kostete es 1.000,50 € bei 20 °C. Der 2. Weltkrieg endete 1945. "
               "Datum: 03.05.2024.",
               "Am dritten Mai zweitausendvierundzwanzig kostete es eintausend Komma fünf null Euro "
               "bei zwanzig Grad Celsius. Der zweite Weltkrieg endete neunzehnhundertfünfundvierzig. "
               "Datum: dritter Mai zweitausendvierundzwanzig."),
    "french": ("Le 1er mai, il a payé 1 000,50 € pour 5 km. C'est le 3e essai.",
               "Le premier mai, il a payé mille virgule cinq zéro euros pour cinq kilomètres. "
               "C'est le troisième essai."),
    "spanish": ("El 3.º día pagó 1.000,50 € por 1 km y 21 km.",
                "El tercer día pagó mil coma cinco cero euros por un kilómetro y veintiún kilómetros."),
    "italian": ("Il 3º giorno pagò 2 € per 1 km.", "Il terzo giorno pagò due euro per un chilometro."),
    "portuguese": ("No 3º dia pagou 1.000,50 € por 1 km.",
                   "No terceiro dia pagou mil vírgula cinco zero euros por um quilômetro."),
    "russian": ("3 мая 2024 года он прошёл 5 км, потом 21 км и 2 км.",
                "3 мая 2024 года он прошёл пять километров, потом двадцать один километр и два километра."),
    "chinese": ("2024年5月3日，价格是3.14元，50%的人走了5km。日期2024-05-03。",
                "二零二四年五月三日，价格是三点一四元，百分之五十的人走了五公里。日期二零二四年五月三日。"),
    "japanese": ("価格は3.14円です。2024-05-03に50%オフ。",
                 "価格は三点一四円です。二千二十四年五月三日に五十パーセントオフ。"),
    "korean": ("가격은 3.14원입니다. 2024-06-03에 50% 할인.",
               "가격은 삼 점 일사원입니다. 이천이십사년 유월 삼일에 오십퍼센트 할인."),
}


@pytest.mark.parametrize("language", sorted(NORMALIZED))
def test_normalisation_per_language(language):
    pytest.importorskip("num2words", reason="num2words (optional) spells numbers in nine languages")
    text, expected = NORMALIZED[language]
    assert normalize_text(text, language) == expected


@pytest.mark.parametrize("language", sorted(NORMALIZED))
def test_normalisation_can_be_turned_off(language):
    text, _ = NORMALIZED[language]
    assert normalize_text(text, language, Normalization.off()) == text


def test_each_normalisation_step_is_separate():
    pytest.importorskip("num2words", reason="num2words (optional) spells numbers")
    text = "On 2024-05-03 it was 5 km."
    assert normalize_text(text, "english", Normalization(numbers=False)) == "On May 3rd, 2024 it was 5 kilometres."
    assert normalize_text(text, "english", Normalization(dates=False, units=False)) == \
        "On 2024-05-03 it was five km."


def test_without_num2words_numbers_stay_digits(monkeypatch):
    monkeypatch.setattr(norm, "_N2W", [None])
    text = "On 2024-05-03 it was 5 km and 3rd."
    assert normalize_text(text, "english") == "On May 3rd, 2024 it was 5 kilometres and 3rd."
    assert "num2words" in Normalization().notes("english")[0]
    assert Normalization().notes("chinese") == []          # our own Chinese reader
    assert normalize_text("价格是3.14元", "chinese") == "价格是三点一四元"


def test_chinese_numbers():
    cases = {0: "零", 10: "十", 11: "十一", 101: "一百零一", 110: "一百一十", 1001: "一千零一",
             2024: "二千零二十四", 10001: "一万零一", 1000010: "一百万零一十",
             123456789: "一亿二千三百四十五万六千七百八十九", -5: "负五"}
    assert {n: chinese_number(n) for n in cases} == cases
