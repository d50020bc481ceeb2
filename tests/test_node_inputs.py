"""Every input that should matter changes what a node makes, and the speech codes show it.

Each case runs a node (after the node that makes its voice or speaker, where there is one) once
with its base inputs and once per row with one input changed; the codes it generated (and the
audio it returned) must differ, or, for the rows marked "same", must not. Runs of the same node
are compared with each other, never with stored codes, so the tests hold whatever seed scheme
the batch uses. A node that drops an input, or passes a fixed value in its place, fails here.

Cheap by design: tiny fixtures, 10 frames per clip for the generation nodes and 6 per chunk for
the long-form ones (their frame limit from the text is cut to 6 here). A fixed bias on the
codebook-0 logits gives the random fixtures a trained model's peaked choices (see _peaked), so
sampling settings show within those few frames.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable
from unittest import mock

import pytest
import torch

from test_nodes import BASE, CUSTOM, DESIGN, loaded, ref_audio, run

CHUNK_FRAMES = 6       # frame limit of a long-form chunk in these tests


def _model(N, name):
    return loaded(N, name)[0]


def made(N, fn) -> list:
    """Runs fn() and returns everything it made: the codes of every generation (in order), then
    the node's outputs (codes, waveforms, report text), as a flat list to compare."""
    from qwen_tts_core.api import QwenTTS

    generated = []
    original = QwenTTS.generate

    def recording(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        generated.extend(out.codes)
        return out

    hooks = [_model(N, name).tts.model.talker.codec_head.register_forward_hook(_peaked)
             for name in (CUSTOM, DESIGN, BASE)]
    try:
        with mock.patch.object(QwenTTS, "generate", recording), \
                mock.patch("qwen_tts_core.api.max_frames_for", lambda text, language, cap: CHUNK_FRAMES):
            outputs = fn()
    finally:
        for h in hooks:
            h.remove()
    return generated + flatten(outputs)


_BIAS: dict = {}


def _peaked(module, inputs, logits):
    """The random fixtures' codebook-0 logits are nearly flat (std 1, no code repeats in a few
    frames), so temperature and the repetition penalty hardly show. A fixed bias of std 2 on the
    audio codes makes a few codes likely and repeated, as in a trained model; the prompt's
    own effect on the logits stays."""
    if logits.shape[-1] not in _BIAS:
        bias = 2.0 * torch.randn(logits.shape[-1], generator=torch.Generator().manual_seed(0))
        bias[2048:] = 0                                    # control ids and end-of-speech untouched
        _BIAS[logits.shape[-1]] = bias
    return logits + _BIAS[logits.shape[-1]].to(logits.device, logits.dtype)


def flatten(value) -> list:
    from qwen_tts_core.speech_codes import SpeechCodes

    if isinstance(value, SpeechCodes):
        return list(value.items)
    if isinstance(value, dict) and "waveform" in value:
        return [value["waveform"]]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in flatten(v)]
    if isinstance(value, (str, torch.Tensor)):
        return [value]
    return []


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        (torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
         and x.shape == y.shape else x == y if isinstance(x, str) else False) for x, y in zip(a, b))


# ------------------------------------------------------------------ what each case runs
MODEL_OF = {"QwenTTSCustomVoice": CUSTOM, "QwenTTSVoiceDesign": DESIGN, "QwenTTSVoiceClone": BASE}
SPEAKER_NODES = {"built_in": ("QwenTTSSpeakerBuiltIn", CUSTOM), "designed": ("QwenTTSSpeakerDesigned", DESIGN),
                 "cloned": ("QwenTTSSpeakerCloned", BASE)}


def speak(node):
    """A generation node on its own."""
    return lambda N, first, inputs: run(N, node, model=_model(N, MODEL_OF[node]), **inputs)


def speak_cloned(N, first, inputs):
    """Speak with Cloned Voice, with a saved-like x-vector voice of a reference clip."""
    return run(N, "QwenTTSVoiceClone", model=_model(N, BASE), voice=xvector_voice(N, first["voice"]), **inputs)


def clone_from_reference(N, first, inputs):
    """Make Voice from Reference Audio, then Speak with Cloned Voice."""
    (voice,) = run(N, "QwenTTSVoiceFromAudio", model=_model(N, BASE), **first)
    return run(N, "QwenTTSVoiceClone", model=_model(N, BASE), voice=voice, **inputs)


def long_form(node):
    """Speaker nodes (one per slot: {slot: (kind, inputs)}), then a long-form node."""
    def fn(N, first, inputs):
        speakers = {}
        for slot, (kind, speaker_inputs) in first.items():
            speaker_node, model = SPEAKER_NODES[kind]
            speaker_inputs = dict(speaker_inputs)
            if kind == "cloned":
                speaker_inputs["voice"] = xvector_voice(N, speaker_inputs.pop("reference"))
            speakers[slot] = run(N, speaker_node, model=_model(N, model), **speaker_inputs)[0]
        return run(N, node, **speakers, **inputs)
    return fn


_VOICES: dict = {}


def xvector_voice(N, clip: str):
    if clip not in _VOICES:
        audio = ref_audio() if clip == "en" else de_audio()
        _VOICES[clip] = run(N, "QwenTTSVoiceFromAudio", model=_model(N, BASE), reference_audio=audio,
                            reference_text="", mode="x-vector only")[0]
    return _VOICES[clip]


def de_audio():
    from conftest import AUDIO
    from qwen_tts_core.audio import read_wav

    wav, rate = read_wav(AUDIO / "ref_de.wav")
    return {"waveform": wav[:1][None], "sample_rate": rate}


# ------------------------------------------------------------------ the cases and their rows
SAMPLING = dict(seed=1, temperature=0.9, top_k=50, top_p=1.0, repetition_penalty=1.05)
GENERATION = dict(text="Hello there.\nGood night.", language="English", one_text_per_line=False,
                  max_seconds=0.8, **SAMPLING)
LONG = dict(retries=0, chunk_seconds=20.0, normalize_text=True, **SAMPLING)
# one paragraph of ~4 s (two chunks at chunk_seconds=3) with a number to spell out
NARRATION = "Hello there, my old friend. I have 3 cats and a dog at home."
# line 1 has 0.2 s before line 2 (its 6 frames are 0.48 s: sped up, and still too long)
SUBTITLES = ("1\n00:00:00,500 --> 00:00:00,800\nHello there.\n\n"
             "2\n00:00:00,900 --> 00:00:02,000\nAnna: I have 3 cats.\n")


@dataclass
class Case:
    run: Callable                   # (N, first-stage inputs, node inputs) -> the node's outputs
    node: dict                      # the node's base inputs
    first: dict = field(default_factory=dict)   # base inputs of the voice / speaker node(s)


CASES = {
    "CustomVoice": Case(speak("QwenTTSCustomVoice"),
                        dict(GENERATION, speaker="Vivian", instruction="Speak warmly.")),
    "VoiceDesign": Case(speak("QwenTTSVoiceDesign"),
                        dict(GENERATION, voice_description="A warm, deep narrator.")),
    "VoiceClone": Case(speak_cloned, GENERATION, dict(voice="en")),
    "VoiceFromAudio": Case(clone_from_reference, GENERATION,
                           dict(reference_audio=ref_audio(seconds=1.5), reference_text="The reference transcript.",
                                mode="auto")),
    "Narrate": Case(long_form("QwenTTSNarrate"), dict(LONG, text=NARRATION),
                    {"speaker": ("built_in", dict(speaker="Ryan", language="English", instruction="",
                                                  name="Narrator"))}),
    "Narrate/designed": Case(long_form("QwenTTSNarrate"), dict(LONG, text="Hello there."),
                             {"speaker": ("designed", dict(voice_description="An old wizard.",
                                                           language="English", name="Narrator"))}),
    "Narrate/cloned": Case(long_form("QwenTTSNarrate"), dict(LONG, text="Hello there."),
                           {"speaker": ("cloned", dict(reference="en", language="English", name="Narrator"))}),
    "SubtitleVoiceOver": Case(long_form("QwenTTSSubtitleVoiceOver"),
                              dict(LONG, subtitles=SUBTITLES, video_seconds=0.0, max_speedup=1.3, overflow="shift"),
                              {"speaker": ("built_in", dict(speaker="Ryan", language="English", instruction="",
                                                            name="Narrator")),
                               "speaker_2": ("built_in", dict(speaker="Serena", language="English",
                                                              instruction="", name="Anna"))}),
    "Script": Case(long_form("QwenTTSScript"), dict(LONG, script="Anna: Hello there.\nBen: Good night."),
                   {"speaker_1": ("built_in", dict(speaker="Ryan", language="English", instruction="", name="Anna")),
                    "speaker_2": ("cloned", dict(reference="en", language="English", name="Ben"))}),
}

SAMPLING_ROWS = [("seed", 2), ("temperature", 0.5), ("temperature", 0.0), ("top_k", 2), ("top_p", 0.2)]
GENERATION_ROWS = SAMPLING_ROWS + [("max_seconds", 0.24), ("one_text_per_line", True),
                                   ("text", "Something else.\nGood night.")]
LONG_ROWS = SAMPLING_ROWS + [("retries", 1)]

# (case, stage, input, value, expect): stage "node" changes the node's own input; otherwise the
# input of the first-stage node (a voice, or the speaker in that slot)
ROWS = [(case, "node", name, value, "differs") for case in ("CustomVoice", "VoiceDesign", "VoiceClone")
        for name, value in GENERATION_ROWS] + [
    ("CustomVoice", "node", "language", "Auto", "differs"),
    ("CustomVoice", "node", "speaker", "Serena", "differs"),
    ("CustomVoice", "node", "speaker_name", " Serena ", "differs"),   # a wired name (Train Voice's) wins
    ("CustomVoice", "node", "instruction", "", "differs"),
    ("VoiceDesign", "node", "language", "Auto", "differs"),
    ("VoiceDesign", "node", "voice_description", "A bright young girl.", "differs"),
    ("VoiceClone", "node", "language", "Auto", "differs"),
    ("VoiceClone", "first", "voice", "de", "differs"),
    ("VoiceFromAudio", "first", "mode", "x-vector only", "differs"),
    ("VoiceFromAudio", "first", "mode", "in-context", "same"),        # auto with a transcript is in-context
    ("VoiceFromAudio", "first", "reference_text", "", "differs"),     # auto without one: x-vector only
    ("VoiceFromAudio", "first", "reference_text", "Another transcript, longer than the first.", "differs"),
    ("VoiceFromAudio", "first", "reference_audio", ref_audio(seconds=2.0), "differs"),
] + [(case, "node", name, value, "differs") for case in ("Narrate", "SubtitleVoiceOver", "Script")
     for name, value in LONG_ROWS] + [
    ("Narrate", "node", "chunk_seconds", 3.0, "differs"),
    ("Narrate", "node", "normalize_text", False, "differs"),
    ("Narrate", "node", "text", "Good night.", "differs"),
    ("Narrate", "speaker", "speaker", "Serena", "differs"),
    ("Narrate", "speaker", "language", "Auto", "differs"),
    ("Narrate", "speaker", "instruction", "Whisper.", "differs"),
    ("Narrate", "speaker", "name", "Someone", "same"),                 # a name only matters with several voices
    ("Narrate/designed", "speaker", "voice_description", "A bright young girl.", "differs"),
    ("Narrate/designed", "speaker", "language", "Auto", "differs"),
    ("Narrate/cloned", "speaker", "reference", "de", "differs"),
    ("Narrate/cloned", "speaker", "language", "Auto", "differs"),
    ("SubtitleVoiceOver", "speaker_2", "speaker", "Aiden", "differs"),  # Anna's line is spoken by speaker_2
    ("SubtitleVoiceOver", "speaker", "speaker", "Aiden", "differs"),
    ("SubtitleVoiceOver", "node", "max_speedup", 1.0, "differs"),      # line 1 is sped up, or not
    ("SubtitleVoiceOver", "node", "overflow", "cut", "differs"),
    ("SubtitleVoiceOver", "node", "video_seconds", 5.0, "differs"),
    ("SubtitleVoiceOver", "node", "normalize_text", False, "differs"),
    ("Script", "speaker_1", "speaker", "Aiden", "differs"),
    ("Script", "speaker_2", "reference", "de", "differs"),
    ("Script", "swap", "name", None, "differs"),                       # names pick who says which line
    ("Script", "node", "script", "Anna: Good night.\nBen: Hello there.", "differs"),
]
# greedy decoding (temperature 0): the seed plays no part, and the repetition penalty shows (a
# code that was chosen would be chosen again)
for case in ("CustomVoice", "VoiceDesign", "VoiceClone", "Narrate", "SubtitleVoiceOver", "Script"):
    CASES[f"{case}/greedy"] = Case(CASES[case].run, dict(CASES[case].node, temperature=0.0), CASES[case].first)
    ROWS += [(f"{case}/greedy", "node", "repetition_penalty", 1.9, "differs"),
             (f"{case}/greedy", "node", "seed", 2, "same")]
# a dialect speaker takes its dialect under Auto as under Chinese (the official model's rule)
ROWS.append(("CustomVoice/dialect", "node", "language", "Auto", "same"))
CASES["CustomVoice/dialect"] = Case(speak("QwenTTSCustomVoice"),
                                    dict(GENERATION, text="今天天气很好。", language="Chinese", speaker="Eric",
                                         instruction=""))


def inputs_of(case: Case, stage: str | None = None, name: str | None = None, value=None) -> tuple[dict, dict]:
    """(first-stage inputs, node inputs) with one input changed; stage "swap" swaps the names of
    the first two speakers."""
    first, node = dict(case.first), dict(case.node)
    if stage == "node":
        node[name] = value
    elif stage == "first":
        first[name] = value
    elif stage == "swap":
        (k1, (kind1, a)), (k2, (kind2, b)) = list(first.items())[:2]
        first[k1], first[k2] = (kind1, dict(a, name=b["name"])), (kind2, dict(b, name=a["name"]))
    elif stage is not None:
        kind, speaker_inputs = first[stage]
        first[stage] = (kind, dict(speaker_inputs, **{name: value}))
    return first, node


_BASE: dict = {}


def base_run(N, case_name: str) -> list:
    if case_name not in _BASE:
        case = CASES[case_name]
        _BASE[case_name] = made(N, lambda: case.run(N, *inputs_of(case)))
    return _BASE[case_name]


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_the_same_inputs_make_the_same_codes(N, case_name):
    """The baseline the other tests need: a rerun with the same inputs makes the same codes."""
    case = CASES[case_name]
    first = base_run(N, case_name)
    assert any(isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.numel() for x in first)
    assert same(first, made(N, lambda: case.run(N, *inputs_of(case))))


@pytest.mark.parametrize("case_name, stage, name, value, expect", ROWS,
                         ids=[re.sub(r"\W+", "_", f"{c}-{s}.{n}={str(v)[:14]}") for c, s, n, v, _ in ROWS])
def test_each_input_changes_the_codes(N, case_name, stage, name, value, expect):
    case = CASES[case_name]
    changed = made(N, lambda: case.run(N, *inputs_of(case, stage, name, value)))
    assert same(base_run(N, case_name), changed) == (expect == "same"), \
        f"{case_name}: {stage}.{name}={value!r} should make {'the same' if expect == 'same' else 'other'} codes"
