"""The per-language duration estimate behind every frame limit."""
import pytest

from qwen_tts_core.duration import count_units, expected_seconds, max_frames_for

pytestmark = pytest.mark.core

TRANSLATIONS = {   # the same sentence; read aloud each takes about 2.5-4 seconds
    "english": "The weather is lovely today, so let's go for a walk in the park.",
    "german": "Das Wetter ist heute schön, also lass uns im Park spazieren gehen.",
    "french": "Il fait beau aujourd'hui, alors allons nous promener dans le parc.",
    "spanish": "Hoy hace buen tiempo, así que vamos a pasear por el parque.",
    "italian": "Oggi il tempo è bello, quindi andiamo a fare una passeggiata nel parco.",
    "portuguese": "O tempo está ótimo hoje, então vamos passear no parque.",
    "russian": "Сегодня прекрасная погода, так что давай прогуляемся в парке.",
    "chinese": "今天天气很好，我们去公园散步吧。",
    "japanese": "今日は天気がいいので、公園を散歩しましょう。",
    "korean": "오늘 날씨가 좋으니 공원에서 산책합시다.",
}


@pytest.mark.parametrize("language", sorted(TRANSLATIONS))
def test_expected_duration_per_language(language):
    seconds = expected_seconds(TRANSLATIONS[language], language)
    assert 2.5 <= seconds <= 5.0, seconds
    limit = max_frames_for(TRANSLATIONS[language], language, cap=8191)
    assert 2 * seconds * 12.5 < limit < 3 * seconds * 12.5 + 50


def test_duration_counts_each_script():
    assert count_units("我喜欢Python。") == {"han": 3, "kana": 0, "hangul": 0, "digit": 0,
                                            "sentence": 1, "clause": 0, "letter": 6}
    assert expected_seconds("word " * 100, "english") == pytest.approx(
        10 * expected_seconds("word " * 10, "english"))
    assert max_frames_for("word " * 10_000, "english", cap=2047) == 2047   # the model's cap holds
    assert max_frames_for("Hi", "english", cap=2047) == 50                  # at least 4 s


def test_generate_takes_its_frame_limit_from_the_duration_estimate(monkeypatch):
    from conftest import tiny_model
    from qwen_tts_core import api

    seen = []
    monkeypatch.setattr(api, "max_frames_for", lambda text, language, cap: seen.append(
        (text, language, cap)) or 3)
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    out = tts.generate_custom_voice(["Hello.", "Hallo, wie geht's?"], "vivian", ["english", "german"],
                                    seed=0)
    assert seen == [("Hello.", "english", 8191), ("Hallo, wie geht's?", "german", 8191)]
    assert max(c.shape[0] for c in out.codes) <= 3
