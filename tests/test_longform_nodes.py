"""Long-form nodes on the ComfyUI-compatible runtime: speakers of the three kinds, narration,
subtitle voice-over (track length from the video), multi-speaker scripts, and their bad input."""
import re

import pytest
import torch

import comfy_env
from test_nodes import BASE, CUSTOM, DESIGN, loaded, memory_asked, ref_audio, run  # noqa: F401 (fixture)
from qwen_tts_core.errors import InputError, UnsupportedModeError

LONG = dict(seed=3, temperature=0.9, top_k=50, top_p=1.0, repetition_penalty=1.05, retries=0,
            chunk_seconds=6.0, normalize_text=True)


def model(N, name):
    return loaded(N, name)[0]


def built_in(N, name="Narrator", speaker="Ryan"):
    return run(N, "QwenTTSSpeakerBuiltIn", model=model(N, CUSTOM), speaker=speaker, language="English",
               instruction="", name=name)[0]


def test_speakers_check_the_model_when_made(N):
    with pytest.raises(UnsupportedModeError, match="CustomVoice"):
        run(N, "QwenTTSSpeakerBuiltIn", model=model(N, DESIGN), speaker="Ryan", language="English",
            instruction="", name="A")
    with pytest.raises(InputError, match="Unknown speaker 'Nobody'"):             # a linked value, after validation
        N["QwenTTSSpeakerBuiltIn"].execute(model=model(N, CUSTOM), speaker="Nobody", language="English",
                                           instruction="", name="A")
    with pytest.raises(InputError, match="description"):
        run(N, "QwenTTSSpeakerDesigned", model=model(N, DESIGN), voice_description="  ", language="Auto", name="B")
    with pytest.raises(InputError, match="Connect a voice"):
        run(N, "QwenTTSSpeakerCloned", model=model(N, BASE), voice="not a voice", language="Auto", name="C")


def speaker_inputs(N, node):
    """Everything but the name, for each Speaker node (with a model of the right kind)."""
    if node == "QwenTTSSpeakerBuiltIn":
        return dict(model=model(N, CUSTOM), speaker="Ryan", instruction="")
    if node == "QwenTTSSpeakerDesigned":
        return dict(model=model(N, DESIGN), voice_description="A calm voice.")
    voice = run(N, "QwenTTSVoiceFromAudio", model=model(N, BASE), reference_audio=ref_audio(),
                reference_text="", mode="x-vector only")[0]
    return dict(model=model(N, BASE), voice=voice)


@pytest.mark.parametrize("node", ["QwenTTSSpeakerBuiltIn", "QwenTTSSpeakerDesigned", "QwenTTSSpeakerCloned"])
def test_speaker_names_no_script_can_use_fail_validation(N, node):
    inputs = speaker_inputs(N, node)
    for name, message in (("Anna: the host", "contains ':'"), ("Ben (young)", "contains '(', ')'"),
                          ("Two\nlines", "contains '\\n'"), ("x" * 41, "at most 40")):
        with pytest.raises(comfy_env.ValidationError, match="custom validation failed: .*" + re.escape(message)):
            run(N, node, **{**inputs, "model": None}, language="English", name=name)   # nothing loaded yet
        with pytest.raises(InputError, match=re.escape(message)):                    # a linked name, at run time
            N[node].execute(**inputs, language="English", name=name)
    for name in ("Anna", "Dr. Who", "名字", "", "x" * 40):
        assert N[node].validate_inputs(name=name) is True
        assert run(N, node, **inputs, language="English", name=name)[0].name == name
    assert N[node].validate_inputs(name=None) is True


def test_narrate_long_text_in_chunks(N):
    text = ("First paragraph, first sentence. It goes on for a while, with a clause or two.\n\n"
            "Second paragraph. " + "More words follow here, one sentence after another. " * 4)
    audio, report = run(N, "QwenTTSNarrate", speaker=built_in(N), text=text, **LONG)
    wav = audio["waveform"]
    assert audio["sample_rate"] == 24000 and wav.shape[:2] == (1, 1) and wav.shape[-1] > 24000
    assert torch.isfinite(wav).all()
    chunks = int(report.split(" chunks")[0].splitlines()[-1])
    assert chunks >= 3  # paragraphs are never joined; ~6 s pieces


def test_long_form_tells_comfyui_the_memory_of_each_chunks_frame_limit(N, memory_asked):  # noqa: F811  (the fixture imported above)
    import comfy.model_management as mm

    asked, limits = memory_asked
    speaker = built_in(N)
    asked.clear()
    with pytest.raises(mm.InterruptProcessingException):             # at the first chunk's first frame
        run(N, "QwenTTSNarrate", speaker=speaker, text="A first sentence, of a few words.", **LONG)
    handle = model(N, CUSTOM)
    chunk = "A first sentence, of a few words."
    assert limits == [(1, handle.tts.auto_max_frames([chunk], "english"))] and 40 < limits[0][1] < 2047
    assert asked == [handle.memory_estimate(1, limits[0][1])]


def test_the_progress_bar_moves_inside_every_chunk(N, monkeypatch):
    """Not only when a chunk ends (the first update came after ~2 minutes on a CPU): frames
    move it inside each chunk, it never goes back, and it ends full."""
    import comfy.utils

    updates = []

    class Bar:  # records what the node shows
        def __init__(self, total):
            pass

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total))

    monkeypatch.setattr(comfy.utils, "ProgressBar", Bar)
    text = "The first sentence is here.\n\nA second one follows.\n\nAnd a third one ends it."
    _, report = run(N, "QwenTTSNarrate", speaker=built_in(N), text=text, **{**LONG, "chunk_seconds": 3.0})
    chunks = int(report.split(" chunks")[0].splitlines()[-1])
    assert chunks == 3 and {total for _, total in updates} == {chunks * 100}
    values = [v for v, _ in updates]
    assert values[0] == 0 and values[-1] == chunks * 100 and values == sorted(values)
    for k in range(chunks):                                 # moved inside every chunk, before its end
        assert any(k * 100 < v < (k + 1) * 100 for v in values), (k, values)


def test_narrate_needs_no_speaker_name(N):
    """The name only matters in scripts and subtitles: a blank one narrates with the same voice."""
    named = run(N, "QwenTTSNarrate", speaker=built_in(N), text="Hello there.", **LONG)[0]
    blank = run(N, "QwenTTSNarrate", speaker=built_in(N, name="  "), text="Hello there.", **LONG)[0]
    assert torch.equal(named["waveform"], blank["waveform"])


def test_narrate_bad_input(N):
    with pytest.raises(InputError, match="empty"):
        run(N, "QwenTTSNarrate", speaker=built_in(N), text=" \n ", **LONG)
    with pytest.raises(InputError, match="Speaker node"):
        run(N, "QwenTTSNarrate", speaker=None, text="Hello.", **LONG)


SRT = ("1\n00:00:00,400 --> 00:00:01,400\nFirst line.\n\n"
       "2\n00:00:02,000 --> 00:00:03,000\nAnna: Second line, by Anna.\n")


def test_subtitle_track_has_the_videos_length(N):
    class FakeVideo:  # what ComfyUI's VIDEO offers the node
        def get_duration(self):
            return 4.25

    anna = built_in(N, "Anna", "Serena")
    audio, report = run(N, "QwenTTSSubtitleVoiceOver", speaker=built_in(N), subtitles=SRT, video=FakeVideo(),
                        video_seconds=0.0, max_speedup=1.3, overflow="cut", speaker_2=anna, **LONG)
    assert audio["waveform"].shape[-1] == int(4.25 * 24000)
    head = audio["waveform"][0, 0, : int(0.39 * 24000)]
    assert head.abs().max() == 0  # nothing before the first cue


def test_subtitle_errors(N):
    bad = "1\n00:00:02,000 --> 00:00:01,000\nEnds before it starts.\n"
    with pytest.raises(InputError, match="not after its start"):
        run(N, "QwenTTSSubtitleVoiceOver", speaker=built_in(N), subtitles=bad, video_seconds=5.0,
            max_speedup=1.3, overflow="shift", **LONG)
    vtt = "WEBVTT\n\n00:00.500 --> 00:01.500\n<v Anna>Hello there.\n"
    with pytest.raises(InputError, match="unknown speaker 'Anna'"):  # a voice tag without that voice
        run(N, "QwenTTSSubtitleVoiceOver", speaker=built_in(N), subtitles=vtt, video_seconds=5.0,
            max_speedup=1.3, overflow="shift", speaker_2=built_in(N, "Ben"), **LONG)


def test_script_mixes_built_in_designed_and_cloned_voices(N):
    anna = built_in(N, "Anna", "Serena")
    narrator = run(N, "QwenTTSSpeakerDesigned", model=model(N, DESIGN), voice_description="An old wizard.",
                   language="English", name="Narrator")[0]
    voice = run(N, "QwenTTSVoiceFromAudio", model=model(N, BASE), reference_audio=ref_audio(),
                reference_text="", mode="x-vector only")[0]
    ben = run(N, "QwenTTSSpeakerCloned", model=model(N, BASE), voice=voice, language="English", name="Ben")[0]
    script = "Narrator: It was late.\nAnna: Who is there?\nBen: Only me.\n\nNarrator: And then silence."
    audio, lines, report = run(N, "QwenTTSScript", script=script, speaker_1=narrator, speaker_2=anna,
                               speaker_3=ben, **LONG)
    assert len(lines) == 4 and all(l["waveform"].shape[:2] == (1, 1) for l in lines)
    total = audio["waveform"].shape[-1]
    assert sum(l["waveform"].shape[-1] for l in lines) < total  # plus the pauses between turns
    assert report.startswith("4 lines: Anna, Ben, Narrator")


# ComfyUI >= 0.20 derives InterruptProcessingException from BaseException (0.3.64: Exception)
@pytest.mark.parametrize("base", [Exception, BaseException], ids=["comfyui-0.3.64", "comfyui-0.20+"])
@pytest.mark.parametrize("node", ["QwenTTSNarrate", "QwenTTSSubtitleVoiceOver", "QwenTTSScript"])
def test_interrupt_stops_long_form_within_one_frame_and_frees_memory(N, node, monkeypatch, base):
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "InterruptProcessingException", type("InterruptProcessingException", (base,), {}))
    rt = comfy_env.runtime()
    frames, emptied = [], []
    original = rt.ChunkProgress.on_frame

    def on_frame(self, index, frame):
        frames.append(index)
        if index == 2:
            mm.interrupt_current_processing(True)                  # the user presses Cancel
        original(self, index, frame)

    monkeypatch.setattr(rt.ChunkProgress, "on_frame", on_frame)
    monkeypatch.setattr(mm, "soft_empty_cache", lambda *a, **k: emptied.append(True))
    inputs = {"QwenTTSNarrate": dict(speaker=built_in(N), text="A long sentence to be interrupted early on."),
              "QwenTTSSubtitleVoiceOver": dict(speaker=built_in(N), subtitles=SRT, video_seconds=5.0,
                                               max_speedup=1.3, overflow="shift"),
              "QwenTTSScript": dict(script="Narrator: A long sentence to be interrupted early on.",
                                    speaker_1=built_in(N))}[node]
    with pytest.raises(mm.InterruptProcessingException) as e:
        run(N, node, **inputs, **LONG)
    assert frames == [0, 1, 2]                                       # stopped at the frame it was asked
    assert e.value.__context__ is None and e.value.__cause__ is None  # generation's frames released
    assert emptied == [True]                                         # and the memory, as the generation nodes do
    assert not mm.processing_interrupted()


def test_script_errors(N):
    with pytest.raises(InputError, match="Zoe"):
        run(N, "QwenTTSScript", script="Zoe: Hello.", speaker_1=built_in(N, "Anna"), **LONG)
    with pytest.raises(InputError, match="named 'Anna'"):
        run(N, "QwenTTSScript", script="Anna: Hello.", speaker_1=built_in(N, "Anna"),
            speaker_2=built_in(N, "Anna", "Serena"), **LONG)
