"""Putting speech on a timeline: narration joined with pauses by how the text breaks, bounded
memory over a 30-minute text, subtitle-timed tracks whose onsets land on the cue times (measured
from the audio), speed-ups that keep the pitch, multi-speaker scripts, and every bad input."""
import math
import wave

import pytest
import torch

from conftest import tiny_model
from longform_helpers import (SR, EspeakSpeaker, ToneSpeaker, fake_decode, measured_onsets,
                              peak_growth_mb)
from qwen_tts_core import InputError
from qwen_tts_core.longform import (Pauses, Speaker, VoiceSpec, WavSink, narrate, parse_script,
                                    parse_subtitles, perform_script, timed_lines, voice_over)
from qwen_tts_core.longform.subtitles import format_time

pytestmark = pytest.mark.core


def sounding(audio: torch.Tensor, threshold: float = 0.01, min_gap: float = 0.05) -> list[tuple[float, float]]:
    """(start, end) seconds of the stretches where the 10 ms envelope exceeds `threshold`."""
    hop = SR // 100
    env = audio[: audio.numel() // hop * hop].abs().view(-1, hop).max(dim=1).values
    loud = (env > threshold).tolist()
    spans, start = [], None
    for i, on in enumerate(loud + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if spans and (start - spans[-1][1]) / 100 < min_gap:
                spans[-1] = (spans[-1][0], i)
            else:
                spans.append((start, i))
            start = None
    return [(a / 100, b / 100) for a, b in spans]


def dominant_hz(audio: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(audio * torch.hann_window(audio.numel())).abs()
    return float(spectrum.argmax()) * SR / audio.numel()


# ------------------------------------------------------------------ narration
def test_chunks_are_trimmed_and_joined_with_pauses_that_follow_the_text():
    text = ("The first sentence is here. A second sentence follows it, with a clause that makes it "
            "long enough to be cut at its comma, as you can see.\n\nA new paragraph starts.")
    speaker = ToneSpeaker(lead=0.3, tail=0.4)
    progress = []
    out = narrate(text, speaker, max_seconds=5, on_progress=progress.append)
    breaks = [c.pause_after for c in out.chunks]
    assert breaks == ["sentence", "clause", "paragraph", "end"]
    spans = sounding(out.audio)
    assert len(spans) == 4
    assert spans[0][0] < 0.03                                   # the lead-in silence was trimmed
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    margins = 0.1                                               # 80 ms kept after, 20 ms before speech
    for gap, brk in zip(gaps, breaks):
        assert gap == pytest.approx(getattr(Pauses(), brk) + margins, abs=0.03), brk
    assert [p.done for p in progress] == [0, 1, 2, 3, 4] and {p.total for p in progress} == {4}
    assert [p.next_seconds for p in progress] == [c.seconds for c in out.chunks] + [0.0]   # what starts next
    assert progress[0].seconds == 0 and progress[0].reports == []                       # before any chunk
    assert progress[-1].seconds == pytest.approx(out.audio.numel() / SR, abs=0.001)


def test_cuts_inside_a_clause_are_crossfaded_without_a_pause():
    words = " ".join(["lorem"] * 120)                     # no punctuation at all
    out = narrate(words, ToneSpeaker(), max_seconds=5)
    assert {c.pause_after for c in out.chunks[:-1]} == {"none"}
    gaps = [b[0] - a[1] for a, b in zip(sounding(out.audio), sounding(out.audio)[1:])]
    assert all(g < 0.12 for g in gaps)                     # only the trimmed edges' margins


def test_a_bad_pause_is_refused_before_anything_is_said():
    speaker = ToneSpeaker()
    text = "A first paragraph.\n\nA second paragraph."
    for name in ("none", "clause", "sentence", "paragraph", "turn", "same"):
        for value in (-0.1, 10.5, math.nan):
            with pytest.raises(InputError, match=rf"The {name} pause must be between 0 and 10 seconds \(got {value}\)"):
                narrate(text, speaker, pauses=Pauses(**{name: value}))
    assert speaker.spoken == []
    assert Pauses(none=0, paragraph=10).after("paragraph") == 10


def test_emoji_mixed_scripts_and_bad_text():
    speaker = ToneSpeaker()
    out = narrate("Hello 👋 world! 我喜欢Python。Привет, мир! 🎉", speaker)
    assert speaker.spoken == ["Hello world! 我喜欢Python。Привет, мир!"] and out.audio.numel() > SR
    with pytest.raises(InputError, match="nothing to say"):
        narrate("🎉🎉 👍", ToneSpeaker())
    with pytest.raises(InputError, match="empty"):
        narrate("   ", ToneSpeaker())


def test_text_in_a_script_the_model_does_not_know_is_noted_in_the_report():
    out = narrate("Hello there. مرحبا بالعالم، كيف حالك اليوم؟", ToneSpeaker())
    assert out.notes[-1].startswith("Much of the text is in Arabic script, which none of the model's languages")
    assert out.summary().splitlines()[-2] == out.notes[-1] and out.audio.numel() > 0
    assert not any("script" in n for n in narrate("Hello there, Ahmed (أحمد).", ToneSpeaker()).notes)
    speakers = {"Anna": ToneSpeaker(), "Ben": ToneSpeaker()}
    play = perform_script("Anna: Hello.\nBen: שלום עולם\nAnna: שלום, Ben.", speakers)
    assert [n for n in play.notes if "script" in n] == [                # once, however many lines
        "Much of the text is in Hebrew script, which none of the model's languages use (Chinese, English, "
        "German, Italian, Portuguese, Spanish, Japanese, Korean, French, Russian): expect it to be "
        "mispronounced or skipped."]


def test_a_script_line_without_words_is_refused_before_anything_is_said():
    speakers = {"Anna": ToneSpeaker(), "Ben": ToneSpeaker()}
    with pytest.raises(InputError, match="Line 3 \\(Anna\\) has nothing to say"):
        perform_script("Anna: Hello.\nBen: Hi.\nAnna: 🎉🎉", speakers)
    assert speakers["Anna"].spoken == [] and speakers["Ben"].spoken == []


def test_a_megabyte_text_is_refused_in_memory_at_once_and_streams_to_a_file(tmp_path):
    """Decision: in memory (what a node returns) a text longer than 3 hours of speech is refused
    before any work, with the estimate and the way out; written to a file, any length runs, one
    chunk at a time (here 100 kB, for speed)."""
    paragraph = "It was a bright cold day in April, and the clocks were striking thirteen. " * 10 + "\n\n"
    big = (paragraph * (1_000_000 // len(paragraph) + 1))[:1_000_000]
    speaker = ToneSpeaker()
    with pytest.raises(InputError, match=r"about 1\d\.\d hours of speech.*limited to 3 hours.*WavSink"):
        narrate(big, speaker)
    assert speaker.spoken == []                           # refused before any chunk was spoken

    class Instant:                                        # 0.1 s per chunk: measures the loop itself
        language = "english"
        take = ToneSpeaker(lead=0, tail=0).speak("Tick.")

        def speak(self, text, style=None):
            return self.take

    out = narrate(big[:100_000], Instant(), sink=WavSink(tmp_path / "book.wav"))
    assert len(out.chunks) > 250
    with wave.open(str(out.audio)) as w:
        assert w.getnframes() > len(out.chunks) * 0.5 * SR   # every chunk and pause is in the file


def test_thirty_minutes_of_narration_in_bounded_memory(tmp_path):
    sentence = "The narrator reads another sentence of the long book aloud. "
    text = lambda minutes: ((sentence * 5 + "\n\n") * 200)[: int(minutes * 60 * 16)]   # noqa: E731
    # warm up the code paths (allocator pools, torchaudio imports) before measuring
    narrate(text(1), ToneSpeaker(), sink=WavSink(tmp_path / "warm.wav"))
    short, out_short = peak_growth_mb(lambda: narrate(text(3), ToneSpeaker(), sink=WavSink(tmp_path / "3.wav")))
    long, out_long = peak_growth_mb(lambda: narrate(text(30), ToneSpeaker(), sink=WavSink(tmp_path / "30.wav")))
    with wave.open(str(out_long.audio)) as w:
        minutes = w.getnframes() / SR / 60
    in_memory, out_mem = peak_growth_mb(lambda: narrate(text(30), ToneSpeaker()))
    audio_mb = out_mem.audio.numel() * 4 / 2 ** 20
    print(f"to a file: {len(out_short.chunks)} chunks +{short:.1f} MB peak, {len(out_long.chunks)} chunks "
          f"({minutes:.1f} min) +{long:.1f} MB peak; in memory: +{in_memory:.1f} MB for {audio_mb:.1f} MB of audio")
    assert minutes > 28 and len(out_long.chunks) >= 9 * len(out_short.chunks)
    assert long < short + 10                       # ten times the chunks, not more memory
    assert in_memory < 2.2 * audio_mb + 20          # in memory: the pieces and the joined result, no more


def test_model_chunk_loop_memory_does_not_grow_with_chunks(tmp_path):
    """The real chunk loop (prompt, generation, run-away check, decode, trim, join) on the fixture
    model, with a decode that makes 20 s of audio per chunk: holding on to every chunk's audio
    would add ~2 MB per chunk, and the measurement sees it (the leaking run below)."""
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)

    def long_decode(codes, voices):
        return [torch.cat([fake_decode(codes, voices)[0]] * round(20 * SR / (codes[0].shape[0] * 1920)))]

    def run(n, name, leak=None):
        speaker = Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=0, retries=0, max_frames=1,
                          decode=long_decode, end_of_speech_required=False)
        if leak is not None:
            speak = speaker.speak
            speaker.speak = lambda text, style=None: leak.append(speak(text, style)) or leak[-1]
        return narrate("\n\n".join(["A short paragraph."] * n), speaker, sink=WavSink(tmp_path / name))

    run(2, "warm.wav")
    few, _ = peak_growth_mb(lambda: run(2, "few.wav"))
    many, out = peak_growth_mb(lambda: run(8, "many.wav"))
    leaked, _ = peak_growth_mb(lambda: run(8, "leak.wav", leak=[]))
    print(f"fixture model, 20 s chunks: 2 chunks +{few:.1f} MB peak, 8 chunks +{many:.1f} MB, "
          f"8 chunks kept alive +{leaked:.1f} MB")
    assert len(out.reports) == 8 and many < few + 4
    assert leaked > few + 8                         # the measurement would catch a leak


# ------------------------------------------------------------------ subtitles
SRT = """\ufeff1
00:00:01,000 --> 00:00:03,200
<i>Hello there.</i>

2
00:00:04,000 --> 00:00:06,000
{\\an8}- The second line
- spans two lines &amp; more.

3
00:00:08,500 --> 00:00:10,000
Goodbye.
"""

VTT = """WEBVTT - a title

NOTE this is a comment
that spans lines

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:03.200 align:start position:10%
<v Anna>Hello there.</v>

00:00:04.000 --> 00:00:06.000
<v.loud Ben>The second <b>line</b>.

00:08.500 --> 00:10.000
<v Anna>Goodbye.
"""


def test_srt_and_vtt_parse_to_the_same_cues():
    srt, vtt = parse_subtitles(SRT.replace("\n", "\r\n")), parse_subtitles(VTT)
    assert [(c.start, c.end, c.text) for c in srt] == [
        (1.0, 3.2, "Hello there."), (4.0, 6.0, "The second line spans two lines & more."), (8.5, 10.0, "Goodbye.")]
    assert [(c.start, c.end) for c in vtt] == [(c.start, c.end) for c in srt]
    assert [c.text for c in vtt] == ["Hello there.", "The second line.", "Goodbye."]
    assert [c.speaker for c in vtt] == ["Anna", "Ben", "Anna"] and srt[1].line == 6
    assert [(c.start, c.end, c.text) for c in timed_lines(
        [(1, 3.2, "Hello there."), {"start": "00:00:04,000", "end": 6, "text": "Two"}, ("8.5", "Bye")])] == [
        (1.0, 3.2, "Hello there."), (4.0, 6.0, "Two"), (8.5, None, "Bye")]


@pytest.mark.parametrize("srt,message", [
    ("1\n00:00:01,000 --> 00:00:03,000\nA\n\n2\n00:00:02,500 --> 00:00:04,000\nB\n",
     r"cue 2 \(line 6\) starts at 00:00:02,500 while cue 1 \(line 2\) lasts until 00:00:03,000 "
     r"\(overlap 0.500 s\)"),
    ("1\n-00:00:01,000 --> 00:00:03,000\nA\n", r"cue 1 \(line 2\): negative time -00:00:01,000"),
    ("1\n00:00:05,000 --> 00:00:06,000\nA\n\n2\n00:00:01,000 --> 00:00:02,000\nB\n",
     r"cue 2 \(line 6\) starts at 00:00:01,000, before cue 1 \(line 2\) \(00:00:05,000\): cues must be in time order"),
    ("1\n00:00:01,000 --> 00:00:03,000\n\n2\n00:00:04,000 --> 00:00:05,000\nB\n",
     r"cue 1 \(line 2\) at 00:00:01,000 has no text"),
    ("1\n00:00:03,000 --> 00:00:02,000\nA\n", r"ends at 00:00:02,000, not after its start 00:00:03,000"),
    ("1\n00:00:01 --> 00:00:xx\nA\n", r"line 2: cannot read the times in '00:00:01 --> 00:00:xx'"),
    ("1\nHello without times\n", r"line 1: '1' is not a cue: expected a time line"),
    ("\n\n  \n", r"subtitles are empty"),
    ("just some text\nand more\n", r"'just some text' is not a cue"),
])
def test_malformed_subtitles_are_refused_with_the_place_and_the_times(srt, message):
    with pytest.raises(InputError, match=message):
        parse_subtitles(srt)


def test_all_problems_are_listed_at_once():
    bad = ("1\n00:00:01,000 --> 00:00:03,000\n\n\n2\n00:00:02,000 --> 00:00:04,000\nB\n\n"
           "3\n00:00:01,000 --> 00:00:01,500\nC\n")
    with pytest.raises(InputError, match=r"3 problem\(s\)") as e:
        parse_subtitles(bad)
    assert "has no text" in str(e.value) and "overlap" in str(e.value) and "time order" in str(e.value)
    with pytest.raises(InputError, match=r"line 2: \('a', 'b', 'c', 'd'\) is not"):
        timed_lines([(1, "ok"), ("a", "b", "c", "d")])
    with pytest.raises(InputError, match="line 1: Not a time: 'soon'"):
        timed_lines([("soon", "text")])


def test_subtitle_times_with_hours_and_the_edges_of_what_is_allowed():
    """Hours, minutes and milliseconds both ways; a cue that starts where the previous one ends
    and one that starts with it are fine (touching is not overlapping; equal starts are in order);
    a byte-order mark, a WEBVTT header after spaces, speakers of timed-line dicts."""
    cues = parse_subtitles("\ufeff1\n01:02:03,450 --> 01:02:05,000\nOne.\n\n"
                           "2\n01:02:05,000 --> 01:02:06,000\nTwo.\n")
    assert [c.start for c in cues] == [pytest.approx(3723.45), 3725.0] and [c.end for c in cues] == [3725.0, 3726.0]
    assert [c.start for c in timed_lines([(1, "a"), (1, "b")])] == [1.0, 1.0]
    assert format_time(3723.45) == "01:02:03,450" and format_time(-61.5) == "-00:01:01,500"
    assert format_time(0) == "00:00:00,000" and format_time(0.5) == "00:00:00,500"
    assert format_time(59.999) == "00:00:59,999" and format_time(3599.0) == "00:59:59,000"
    assert format_time(3600) == "01:00:00,000" and format_time(60) == "00:01:00,000"
    vtt = parse_subtitles("  WEBVTT\n\n00:01.000 --> 00:02.000\n<v Anna>Hi.\n")
    assert [(c.start, c.end, c.text, c.speaker) for c in vtt] == [(1.0, 2.0, "Hi.", "Anna")]
    lines = timed_lines([{"start": "00:00:01,000", "end": 2, "text": " Hello   there. ", "speaker": "Anna"},
                         {"start": 3, "text": "Bye."}])
    assert [(c.start, c.end, c.text, c.speaker) for c in lines] == [(1.0, 2.0, "Hello there.", "Anna"),
                                                                    (3.0, None, "Bye.", None)]
    with pytest.raises(InputError) as e:       # 10 problems: the first 8 shown
        timed_lines([(1.0, 1.0, "ends as it starts"), (-0.5, "early"), (0.5, 0.2, "x"), (0.6, 0.8, "y"),
                     (0.7, 0.9, "z"), (2, "a"), (3, "b"), (2.5, "c"), (4, 5, ""), (6, "d"), (5.5, "e"),
                     (7, ""), (8, "")])
    assert str(e.value) == (
        "The subtitles have 10 problem(s):\n"
        "- cue 1: ends at 00:00:01,000, not after its start 00:00:01,000\n"
        "- cue 2: negative time -00:00:00,500\n"
        "- cue 2 starts at -00:00:00,500, before cue 1 (00:00:01,000): cues must be in time order\n"
        "- cue 3: ends at 00:00:00,200, not after its start 00:00:00,500\n"
        "- cue 5 starts at 00:00:00,700 while cue 4 lasts until 00:00:00,800 (overlap 0.100 s): one voice "
        "cannot say two lines at once; end cue 4 earlier or start cue 5 later\n"
        "- cue 8 starts at 00:00:02,500, before cue 7 (00:00:03,000): cues must be in time order\n"
        "- cue 9 at 00:00:04,000 has no text\n"
        "- cue 11 starts at 00:00:05,500, before cue 10 (00:00:06,000): cues must be in time order\n"
        "- ... and 2 more")
    for bad, message in [([], "The subtitles have 1 problem(s):\n- no lines given"),
                         ("text", "Timed lines must be a list of (start, text), (start, end, text) or "
                                  "{'start', 'end', 'text', 'speaker'} items."),
                         ([(1, 2, 3, 4), (1, 5)], "The subtitles have 2 problem(s):\n- line 1: (1, 2, 3, 4) is not "
                          "(start, text), (start, end, text) or a dict with 'start' and 'text'\n- line 2: the "
                          "text must be a string, got int")]:
        with pytest.raises(InputError) as e:
            timed_lines(bad)
        assert str(e.value) == message
    for bad, message in [("  ", "The subtitles are empty; paste an SRT or WebVTT file's text."),
                         ("hello\n", "The subtitles have 1 problem(s):\n- line 1: 'hello' is not a cue: expected "
                                     "a time line like '00:00:01,000 --> 00:00:03,500'"),
                         ("WEBVTT\n", "The subtitles have 1 problem(s):\n- no cues found: expected blocks of a "
                                      "number, a time line (00:00:01,000 --> 00:00:03,500) and text"),
                         ("1\n00:00:01,000 --> 00:00:02,000\nA.\n\nB\n00:00:03,000 --> 00:00:04,000\nC.\n\n"
                          "3\n1 --> 2\nD.\n",
                          "The subtitles have 2 problem(s):\n- line 5: 'B' before the time line is not a cue number"
                          "\n- line 10: cannot read the times in '1 --> 2'; write them as 00:00:01,000 --> "
                          "00:00:03,500"),
                         ("1\n00:00:01,000 --> 00:00:02,000\nA.\nB.\n00:00:03,000 --> 00:00:04,000\nC.\n",
                          "The subtitles have 1 problem(s):\n- line 5: a second time line in the cue of line 2: a "
                          "blank line is missing between two cues"),
                         ("1\n00:00:01,000 --> 00:00:02,000\nA.\n\nB.\n\n2\n00:00:03,000 --> 00:00:04,000\nC.\n",
                          "The subtitles have 1 problem(s):\n- line 5: 'B.' is not a cue: expected a time line like "
                          "'00:00:01,000 --> 00:00:03,500' (or a blank line is missing between two cues)")]:
        with pytest.raises(InputError) as e:
            parse_subtitles(bad)
        assert str(e.value) == message


def test_voice_over_onsets_land_on_the_subtitle_times():
    """Real speech (espeak-ng) with a random lead-in of near-silence per line: each line's speech
    onset, measured in the finished track, is on its cue to within 2 ms (measured: -0.7 to -0.1 ms;
    without the onset correction lines start ~20 ms late)."""
    cues = parse_subtitles(
        "1\n00:00:00,500 --> 00:00:02,500\nGood evening.\n\n"
        "2\n00:00:03,250 --> 00:00:05,000\nSeven silver swans swam south.\n\n"
        "3\n00:00:06,120 --> 00:00:08,000\nFinally, the weather.\n\n"
        "4\n00:00:09,700 --> 00:00:11,000\nThank you.\n")
    speaker = EspeakSpeaker(seed=3)
    track = voice_over(cues, speaker, video_seconds=12.345)
    assert track.audio.numel() == round(12.345 * SR)
    onsets = measured_onsets(track.audio, [c.start for c in cues])
    errors_ms = [1000 * (o - c.start) for o, c in zip(onsets, cues)]
    print("onset errors (ms):", [round(e, 1) for e in errors_ms], "lead-ins (s):",
          [round(x, 2) for x in speaker.leads])
    assert all(abs(e) < 2 for e in errors_ms)
    assert [line.speedup for line in track.lines] == [1.0] * 4 and not track.flags


def test_a_sped_up_line_starts_on_its_cue_too():
    """A line sped up to fit its slot: its onset is found again in the stretched audio, which the
    phase vocoder smears by a few milliseconds (measured +6.6..7.7 ms at this -50 dBFS measure,
    -1.9 ms at -60 dBFS); without the onset correction it starts ~19 ms late."""
    cues = timed_lines([(0.5, "Seven silver swans swam south."), (2.15, "Thank you.")])
    for seed in (3, 4):
        track = voice_over(cues, EspeakSpeaker(seed=seed), video_seconds=4.0)
        assert 1.1 < track.lines[0].speedup < 1.3 and not track.flags
        (onset,) = measured_onsets(track.audio, [0.5])
        print(f"sped up {track.lines[0].speedup:.3f}x: onset error {1000 * (onset - 0.5):.1f} ms")
        assert abs(onset - 0.5) < 0.010


def test_a_long_line_is_sped_up_with_its_pitch_kept():
    cues = timed_lines([(1.0, 3.0, "A line that needs about three seconds."),
                        (4.0, 5.0, "Next.")])
    speaker = ToneSpeaker(scale=3.3 / 2.65)     # the first line: ~3.3 s of tone for a 2.9 s slot
    track = voice_over(cues, speaker, max_speedup=1.3)
    first = track.lines[0]
    assert 1.1 < first.speedup <= 1.3 and not track.flags
    spans = sounding(track.audio)
    assert spans[0][0] == pytest.approx(1.0, abs=0.02) and spans[0][1] <= 4.0 - 0.05
    assert dominant_hz(track.audio[round(1.2 * SR): round(3.5 * SR)]) == pytest.approx(220, abs=2)


@pytest.mark.parametrize("overflow", ["shift", "cut"])
def test_a_line_too_long_even_sped_up_is_flagged(overflow):
    cues = timed_lines([(0.0, "A line far too long for its tiny slot of time, it goes on."), (2.0, "Next.")])
    track = voice_over(cues, ToneSpeaker(), max_speedup=1.25, overflow=overflow, video_seconds=4)
    assert track.lines[0].speedup == 1.25
    if overflow == "shift":
        assert track.lines[1].late_by > 0.5
        assert "runs" in track.flags[0] and "past its time even at 1.25x" in track.flags[0]
        assert "cue 2 at 00:00:02,000 starts" in track.flags[1] and "late" in track.flags[1]
        assert sounding(track.audio)[0][1] > 2.5            # one long stretch of speech
    else:
        assert track.lines[0].cut_seconds > 1 and "cut off" in track.flags[0]
        onsets = [s[0] for s in sounding(track.audio)]
        assert onsets[1] == pytest.approx(2.0, abs=0.02)     # the next line is on time
        assert sounding(track.audio)[0][1] <= 2.0
    assert track.audio.numel() == 4 * SR


def test_fit_to_cue_end_and_speakers_per_cue():
    cues = parse_subtitles(VTT)
    anna, ben = ToneSpeaker(freq=220), ToneSpeaker(freq=330)
    track = voice_over(cues, {"anna": anna, "Ben": ben}, fit_to="cue_end")
    assert anna.spoken == ["Hello there.", "Goodbye."] and ben.spoken == ["The second line."]
    assert dominant_hz(track.audio[round(4.1 * SR): round(4.6 * SR)]) == pytest.approx(330, abs=3)
    assert all(line.speech_seconds <= line.slot_seconds + 0.05 for line in track.lines)
    with pytest.raises(InputError, match="unknown speaker 'Ben'"):
        voice_over(cues, {"Anna": anna, "Carl": ben})
    with pytest.raises(InputError, match="names no speaker and there are 2 voices"):
        voice_over(parse_subtitles(SRT), {"Anna": anna, "Ben": ben})


def test_sound_descriptions_are_not_spoken_and_names_pick_voices():
    cues = parse_subtitles("1\n00:00:01,000 --> 00:00:02,000\n[Music]\n\n"
                           "2\n00:00:02,500 --> 00:00:04,000\nANNA: [laughs] Hello, Ben!\n\n"
                           "3\n00:00:04,500 --> 00:00:05,500\n♪ ♪\n\n"
                           "4\n00:00:06,000 --> 00:00:07,000\nBen: Hi.\n")
    anna, ben = ToneSpeaker(freq=220), ToneSpeaker(freq=330)
    track = voice_over(cues, {"Anna": anna, "Ben": ben})
    assert anna.spoken == ["Hello, Ben!"] and ben.spoken == ["Hi."]
    assert [line.cue.index for line in track.lines] == [2, 4]
    assert len(track.notes) == 2 and "cue 1 (line 2) at 00:00:01,000 has nothing to say" in track.notes[0]
    assert [s[0] for s in sounding(track.audio)] == pytest.approx([2.5, 6.0], abs=0.02)
    with pytest.raises(InputError, match="None of the subtitle lines has words"):
        voice_over(parse_subtitles("1\n00:00:01,000 --> 00:00:02,000\n[Music]\n"), anna)


def test_bad_voice_over_settings():
    cues = parse_subtitles(SRT)
    for kwargs, message in [(dict(video_seconds=9), "cue 3 .* starts at 00:00:08,500, after the video ends"),
                            (dict(video_seconds=-1), "positive number"),
                            (dict(overflow="squeeze"), "overflow must be"),
                            (dict(max_speedup=3), "max_speedup must be between")]:
        if "video_seconds" in kwargs and kwargs["video_seconds"] == 9:
            cues_late = timed_lines([(1, "a"), (9.5, "b")])
            with pytest.raises(InputError, match="cue 2 starts at 00:00:09,500, after the video ends"):
                voice_over(cues_late, ToneSpeaker(), video_seconds=9)
            continue
        with pytest.raises(InputError, match=message):
            voice_over(cues, ToneSpeaker(), **kwargs)


# ------------------------------------------------------------------ scripts
SCRIPT = """Anna: Hello Ben!
ben (whispering): Hi Anna.
I was waiting.
[door closes]
Anna: Shall we go?

Anna: It is late.
Ben：好的。"""


def test_script_parsing():
    lines = parse_script(SCRIPT, ["Anna", "Ben"])
    assert [(l.speaker, l.text, l.style, l.brk_before) for l in lines] == [
        ("Anna", "Hello Ben!", None, "start"),
        ("Ben", "Hi Anna. I was waiting.", "whispering", "turn"),
        ("Anna", "Shall we go?", None, "paragraph"),
        ("Anna", "It is late.", None, "paragraph"),
        ("Ben", "好的。", None, "turn")]
    assert [l.line for l in lines] == [1, 2, 5, 7, 8]
    notes = parse_script("Anna: We meet at 10:30 sharp.\nAt 10:30: see http://example.com\nNote, this: fine",
                         ["Anna"])
    assert len(notes) == 1 and notes[0].text.endswith("Note, this: fine")


@pytest.mark.parametrize("script,message", [
    ("Anna: Hi.\nCarl: Hello.", r"Line 2: unknown speaker 'Carl'. Voices are given for: Anna, Ben"),
    ("Hello there.\nAnna: Hi.", r"Line 1 has no speaker: start it with a name and a colon"),
    ("Anna: Hi.\nBen:   ", r"Line 2: Ben has nothing to say"),
    ("[music]\n(silence)", r"no spoken lines"),
    ("", r"script is empty"),
])
def test_bad_scripts(script, message):
    with pytest.raises(InputError, match=message):
        parse_script(script, ["Anna", "Ben"])


def test_script_performance_with_segments_and_pauses():
    anna, ben = ToneSpeaker(freq=220), ToneSpeaker(freq=330)
    out = perform_script(SCRIPT, {"Anna": anna, "Ben": ben})
    assert [s.speaker for s in out.segments] == ["Anna", "Ben", "Anna", "Anna", "Ben"]
    assert ben.styles == ["whispering", None]
    for i, s in enumerate(out.segments):
        expected = 220 if s.speaker == "Anna" else 330
        assert dominant_hz(out.segment_audio(i)) == pytest.approx(expected, abs=3)
    gaps = [(b.start - a.end) / SR for a, b in zip(out.segments, out.segments[1:])]
    pauses = Pauses()
    assert gaps == pytest.approx([pauses.turn, pauses.paragraph, pauses.paragraph, pauses.turn], abs=0.03)
    with pytest.raises(InputError, match="unknown speaker 'Anna'"):
        perform_script(SCRIPT, {"Ben": ben, "Carl": anna})


def test_tracks_and_scripts_report_progress_before_each_line():
    from qwen_tts_core.duration import expected_seconds

    srt = ("1\n00:00:00,500 --> 00:00:02,000\nLook up there.\n\n"
           "2\n00:00:04,000 --> 00:00:09,000\nIt is the most beautiful thing I have ever seen.\n")
    progress = []
    voice_over(parse_subtitles(srt), ToneSpeaker(), on_progress=progress.append)
    assert [(p.done, p.total) for p in progress] == [(0, 2), (1, 2), (2, 2)]
    said = ["Look up there.", "It is the most beautiful thing I have ever seen."]
    assert [p.next_seconds for p in progress] == pytest.approx(
        [expected_seconds(t, "english") for t in said] + [0.0])
    progress = []
    out = perform_script(SCRIPT, {"Anna": ToneSpeaker(), "Ben": ToneSpeaker()}, on_progress=progress.append)
    n = len(out.segments)
    assert [p.done for p in progress] == list(range(n + 1)) and progress[0].reports == []
    assert [p.next_seconds for p in progress] == pytest.approx(
        [expected_seconds(s.text, "english") for s in out.segments] + [0.0])


def test_a_script_mixing_built_in_designed_and_cloned_voices():
    from test_longform_synthesis import golden_clone
    cv = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    vd = tiny_model("Tiny-VoiceDesign", speech_tokenizer=False)
    base = tiny_model("Tiny-Base", speech_tokenizer=False)
    fast = dict(seed=0, retries=0, max_frames=3, decode=fake_decode, end_of_speech_required=False,
                min_reference_seconds=0)
    voices = {"Host": Speaker(VoiceSpec.custom(cv, "ryan", "english"), **fast),
              "Guest": Speaker(VoiceSpec.design(vd, "A bright young voice.", "english"), **fast),
              "Clone": Speaker(VoiceSpec.clone_of(base, golden_clone(False), "english"), **fast)}
    out = perform_script("Host (cheerful): Welcome!\nGuest: Thanks.\nClone: Hello.\nGuest: Bye.", voices)
    assert [s.speaker for s in out.segments] == ["Host", "Guest", "Clone", "Guest"]
    assert all(s.end - s.start > 0 for s in out.segments)
    assert out.notes == [] and voices["Guest"].carry is not None
    noted = perform_script("Clone (angry): Hi.", voices)   # a style on a cloned voice: noted, not applied
    assert "style (angry) was not applied" in noted.notes[0]


def test_line_reports_say_where_each_line_landed_and_what_was_cut():
    """The numbers behind the flags, against the track itself: where the onset landed
    (`placed_at`, on the audio's first sound), how late (`late_by` = placed_at - cue time), the
    speech kept (`speech_seconds`: with overflow="cut", from the onset to the slot's hard end or
    the video's end, the rest counted in `cut_seconds`), and the flag texts word for word."""
    cues = timed_lines([(0.4, "A line far too long for its tiny slot of time, it goes on."), (2.0, "Next."),
                        (3.5, "And a last one.")])
    tracks = {o: voice_over(cues, ToneSpeaker(), max_speedup=1.25, overflow=o, video_seconds=end)
              for o, end in (("shift", 6.0), ("cut", 4.2))}
    onsets = {o: [span[0] for span in sounding(track.audio)] for o, track in tracks.items()}
    for o, track in tracks.items():
        first = track.lines[0]
        assert first.placed_at == pytest.approx(0.4, abs=1 / SR)
        assert onsets[o][0] == pytest.approx(0.4, abs=0.01)
        assert first.slot_seconds == pytest.approx(2.0 - 0.1 - 0.4) and first.speedup == 1.25
    # shift: the long line runs on whole, the next two start late
    first, second, third = tracks["shift"].lines
    assert first.cut_seconds == 0.0 and first.speech_seconds > first.slot_seconds + 0.5
    for line, cue_time in ((second, 2.0), (third, 3.5)):
        assert line.late_by == pytest.approx(line.placed_at - cue_time, abs=1 / SR) and line.late_by > 0.1
    assert onsets["shift"][1] == pytest.approx(second.placed_at, abs=0.01)
    assert tracks["shift"].flags == [
        f"cue 1 at 00:00:00,400 runs {first.speech_seconds - first.slot_seconds:.2f} s past its time even at 1.25x",
        f"cue 2 at 00:00:02,000 starts {second.late_by:.2f} s late: the line before it runs long",
        f"cue 3 at 00:00:03,500 starts {third.late_by:.2f} s late: the line before it runs long"]
    # cut: the long line ends at its slot's end, faded out, and what was cut adds up to the whole
    cut_first, cut_second, cut_third = tracks["cut"].lines
    assert cut_first.placed_at + cut_first.speech_seconds == pytest.approx(1.9, abs=1 / SR)
    assert cut_first.cut_seconds + cut_first.speech_seconds == pytest.approx(first.speech_seconds, abs=2 / SR)
    assert cut_second.late_by == 0.0 and cut_second.placed_at == pytest.approx(2.0, abs=1 / SR)
    assert onsets["cut"][1] == pytest.approx(2.0, abs=0.01)
    # the last line is cut at the video's end (4.2 s), faded too
    assert cut_third.placed_at + cut_third.speech_seconds == pytest.approx(4.2, abs=1 / SR) and cut_third.cut_seconds > 0.1
    assert tracks["cut"].flags == [
        f"cue 1 at 00:00:00,400: {cut_first.cut_seconds:.2f} s cut off even at 1.25x; shorten the line or give it more time",
        f"cue 3 at 00:00:03,500: {cut_third.cut_seconds:.2f} s cut off even at {cut_third.speedup:.2f}x; shorten the "
        "line or give it more time"]
    # with overflow="shift" too, nothing runs past the video's end: the last line is cut there
    last = voice_over(cues, ToneSpeaker(), max_speedup=1.25, overflow="shift", video_seconds=4.6).lines[2]
    assert last.placed_at + last.speech_seconds == pytest.approx(4.6, abs=1 / SR) and last.cut_seconds > 0.1
    for end in (1.9, 4.2):
        faded = tracks["cut"].audio[round(end * SR) - round(0.03 * SR): round(end * SR)]
        assert faded[-50:].abs().max() < 0.05 * faded[:50].abs().max()    # faded out, not chopped


def test_voice_over_setting_messages_word_for_word():
    cues = timed_lines([(1, "a"), (2, "b")])
    for kwargs, message in [
            (dict(overflow="squeeze"), "overflow must be 'shift' or 'cut' (got 'squeeze')."),
            (dict(fit_to="middle"), "fit_to must be 'next_cue' or 'cue_end' (got 'middle')."),
            (dict(max_speedup=2.5), "max_speedup must be between 1.0 (never speed up) and 2.0 (got 2.5)."),
            (dict(video_seconds=0), "The video duration must be a positive number of seconds (got 0)."),
            (dict(video_seconds=2), "cue 2 starts at 00:00:02,000, after the video ends (00:00:02,000): 1 cue(s) "
                                    "beyond the end.")]:
        with pytest.raises(InputError) as e:
            voice_over(cues, ToneSpeaker(), **kwargs)
        assert str(e.value) == message
    for bad_cues, message in [([], "No subtitle lines to speak."),
                              (timed_lines([(1, "[Music]")]), "None of the subtitle lines has words to speak.")]:
        with pytest.raises(InputError) as e:
            voice_over(bad_cues, ToneSpeaker())
        assert str(e.value) == message
    # the edges of the allowed ranges are allowed
    assert voice_over(cues, ToneSpeaker(), max_speedup=1.0, video_seconds=2.5).lines[0].speedup == 1.0
    assert voice_over(cues, ToneSpeaker(), max_speedup=2.0, video_seconds=2.5).audio.numel() == round(2.5 * SR)


def test_a_script_parses_to_lines_with_their_speaker_style_and_break():
    """Every line of a script: its speaker, text, style, line number and the break before it
    (start, turn to another speaker, same speaker, or a new paragraph of the same speaker after a
    blank line or a direction); a line without a name continues the line before it (Windows line
    ends too)."""
    from qwen_tts_core.longform.script import ScriptLine

    script = ("Anna (softly): Hello Ben.\r\nI missed you.\r\n\r\nIt has been long.\r\n"
              "Ben: Hi Anna.\r\nben: Me too.\r\n[pause]\r\nStill here.\r\nAnna: Good.")
    assert parse_script(script, ["Anna", " Ben "]) == [
        ScriptLine(0, "Anna", "Hello Ben. I missed you.", "softly", 1, "start"),
        ScriptLine(1, "Anna", "It has been long.", "softly", 4, "paragraph"),
        ScriptLine(2, " Ben ", "Hi Anna.", None, 5, "turn"),
        ScriptLine(3, " Ben ", "Me too.", None, 6, "same"),
        ScriptLine(4, " Ben ", "Still here.", None, 8, "paragraph"),
        ScriptLine(5, "Anna", "Good.", None, 9, "turn")]
    for script, speakers, message in [
            ("  ", ["Anna"], "The script is empty; write lines like 'Anna: Hello!'."),
            ("Anna: Hi.", [], "No voices given for the script; give each speaker a voice."),
            ("[music]\n(door)", ["Anna"], "The script has no spoken lines, only directions."),
            ("Hello there, how are you doing today my friend?", ["Anna"],
             "Line 1 has no speaker: start it with a name and a colon, e.g. 'Anna: Hello there, how are you "
             "doing'.")]:
        with pytest.raises(InputError) as e:
            parse_script(script, speakers)
        assert str(e.value) == message


def test_fades_crossfades_trims_and_speech_bounds_by_their_numbers():
    """The edit primitives on signals whose answer is known: a raised-cosine fade of exactly
    in_ms / out_ms, an equal-power crossfade (a constant signal into itself peaks at sqrt 2 in the
    middle), and a tone in silence whose speech bounds are its first and last sample (to a 10 ms
    frame at the end), kept with 20 ms before and 80 ms after by trim."""
    from qwen_tts_core.longform import edit

    ones = torch.ones(SR)
    faded = edit.fade(ones, in_ms=5, out_ms=20)
    assert faded[0] == 0 and faded[-1] == 0 and faded[119] == 1 and faded[-480] == 1
    assert 0 < faded[1] < faded[60] < faded[118] < 1 and 0 < faded[-2] < faded[-240] < faded[-479] < 1
    assert torch.equal(faded[120:-480], ones[120:-480])
    short = edit.fade(torch.ones(100), in_ms=5, out_ms=20)       # ramps of at most half the clip each
    assert torch.equal(short[[0, 49, 50, 99]], torch.tensor([0., 1., 1., 0.])) and 0.45 < short[25] < 0.6
    default = edit.fade(ones)                                      # 5 ms in, 20 ms out
    assert default[118] < 1 == default[119] and default[-479] < 1 == default[-480]
    mixed = edit.crossfade(torch.ones(101), torch.ones(101))
    assert mixed[0] == 1 and mixed[-1] == pytest.approx(1) and mixed[50] == pytest.approx(math.sqrt(2))
    assert edit.crossfade(torch.ones(101), torch.zeros(101))[[0, 50]].tolist() == pytest.approx([1, math.cos(math.pi / 4)])
    audio = torch.cat([torch.zeros(SR // 2), 0.5 * torch.ones(SR), torch.zeros(SR // 2)])
    first, last = edit.speech_bounds(audio)
    assert first == SR // 2 and 3 * SR // 2 - 1 <= last < 3 * SR // 2 + SR // 100
    blip = audio.clone()                                           # 30 ms of sound is the onset already
    blip[SR // 4: SR // 4 + round(0.03 * SR)] = 0.5
    assert edit.speech_bounds(blip)[0] == SR // 4
    kept, onset = edit.trim(audio)
    assert onset == round(0.02 * SR) and kept.numel() == (last + 1 + round(0.08 * SR)) - (first - onset)
    silent, onset = edit.trim(torch.zeros(SR))
    assert edit.speech_bounds(torch.zeros(SR)) is None and silent.numel() == 0 and onset == 0
