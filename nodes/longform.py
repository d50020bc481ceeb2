"""Long-form nodes: a speaker (built-in, designed or cloned voice) says texts of any length,
subtitle-timed voice-over tracks, and multi-speaker scripts. They build the core's `Speaker`
when they run and call `narrate` / `voice_over` / `perform_script`."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from comfy_api.latest import io
from qwen_tts_core.errors import InputError
from qwen_tts_core.longform import (Normalization, Pauses, Speaker, VoiceSpec, narrate, parse_subtitles,
                                   perform_script, voice_over)
from qwen_tts_core.longform.script import check_speaker_name
from qwen_tts_core.voice import Voice

from .models import ModelHandle
from .progress import ChunkProgress, run_interruptible
from .loudness import level_track, loudness_input, per_line_input
from .types import (CATEGORY, LANGUAGES, SAMPLE_RATE, SPEAKERS, Voice as VoiceType, model_input,
                    sampling_inputs, sampling_settings, speaker_choice, to_audio, validation_result)
from .watermark import before_generating, mark, note, watermark_input

SpeakerType = io.Custom("QWEN_TTS_SPEAKER")      # nodes.longform.SpeakerRecipe
MAX_SCRIPT_SPEAKERS = 6


@dataclass
class SpeakerRecipe:
    """What flows through QWEN_TTS_SPEAKER wires: a voice and a name; the Speaker is built by
    the node that uses it (with that node's seed and sampling)."""
    handle: ModelHandle
    kind: str                       # "custom" | "design" | "clone"
    name: str
    language: str
    speaker: str | None = None
    instruct: str | None = None
    voice: Voice | None = None

    def spec(self) -> VoiceSpec:
        tts = self.handle      # a ModelHandle: it puts the model on its device before each generation
        if self.kind == "custom":
            return VoiceSpec.custom(tts, self.speaker, self.language, self.instruct)
        if self.kind == "design":
            return VoiceSpec.design(tts, self.instruct, self.language)
        self.voice.check_fits(self.handle.tts)
        return VoiceSpec.clone_of(tts, self.voice.prompt, self.language)

    def build(self, seed: int, sampling, sub_sampling, retries: int, on_frame) -> Speaker:
        return Speaker(self.spec(), seed=seed, sampling=sampling, sub_sampling=sub_sampling,
                       retries=retries, on_frame=on_frame)


def _name_input(default: str) -> io.Input:
    return io.String.Input("name", default=default,
                           tooltip="Name of this speaker in a script ('Name: line') or in subtitles "
                                   "(WebVTT <v Name> or 'Name: ' before the text): at most 40 characters, "
                                   "no colon, brackets or line breaks.")


def _speaker_output() -> list[io.Output]:
    return [SpeakerType.Output("speaking_voice", display_name="speaker",
                               tooltip="A voice for the Narrate, Subtitle Voice-over and Script nodes.")]


def _language_input() -> io.Input:
    return io.Combo.Input("language", options=LANGUAGES, default="Auto",
                          tooltip="Language of the texts (Auto: detected per chunk).")


def _speaker(model, kind: str, name: str, language: str, **voice) -> io.NodeOutput:
    if model is None or not hasattr(model, "ready"):
        raise InputError("Connect a Qwen3-TTS Model Loader to 'model'.")
    recipe = SpeakerRecipe(model, kind, check_speaker_name(name or ""), language, **voice)
    recipe.spec()  # checks now: the model's kind, the speaker / description / voice, the language
    return io.NodeOutput(recipe)


class _SpeakerNode(io.ComfyNode):
    """The Speaker nodes: the name is checked before the prompt runs (ComfyUI finds an inherited
    validate_inputs)."""

    @classmethod
    def validate_inputs(cls, name=None):
        return validation_result(check_speaker_name, name)


class QwenTTSSpeakerBuiltIn(_SpeakerNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSSpeakerBuiltIn", display_name="Qwen3-TTS Speaker: Built-in Voice",
            category=CATEGORY, description="A built-in voice of a CustomVoice model for long texts, "
                                           "subtitles and scripts.",
            inputs=[model_input("A CustomVoice model."),
                    io.Combo.Input("speaker", options=SPEAKERS, default="Ryan",
                                   tooltip="Built-in voice; checked against the loaded model when it runs."),
                    _language_input(),
                    io.String.Input("instruction", multiline=True, default="",
                                    tooltip="Optional speaking style for every chunk (1.7B models)."),
                    _name_input("Narrator")],
            outputs=_speaker_output())

    @classmethod
    def validate_inputs(cls, speaker=None, name=None):
        # the loaded model's own speakers are checked when the node runs
        ok = speaker_choice("Qwen3-TTS Speaker: Built-in Voice", speaker)
        return super().validate_inputs(name) if ok is True else ok

    @classmethod
    def execute(cls, model, speaker, language, instruction, name) -> io.NodeOutput:
        return _speaker(model, "custom", name, language, speaker=speaker,
                        instruct=(instruction or "").strip() or None)


class QwenTTSSpeakerDesigned(_SpeakerNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSSpeakerDesigned", display_name="Qwen3-TTS Speaker: Designed Voice",
            category=CATEGORY,
            description="A voice from a description (VoiceDesign model). The first good chunk is "
                        "carried to the following ones, so a long text keeps one voice.",
            inputs=[model_input("The VoiceDesign model."),
                    io.String.Input("voice_description", multiline=True,
                                    default="A warm, low female voice, calm and unhurried.",
                                    tooltip="Describe the voice: gender, age, timbre, accent, emotion, pace."),
                    _language_input(),
                    _name_input("Narrator")],
            outputs=_speaker_output())

    @classmethod
    def execute(cls, model, voice_description, language, name) -> io.NodeOutput:
        return _speaker(model, "design", name, language, instruct=(voice_description or "").strip())


class QwenTTSSpeakerCloned(_SpeakerNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSSpeakerCloned", display_name="Qwen3-TTS Speaker: Cloned Voice",
            category=CATEGORY, description="A cloned voice (Base model) for long texts, subtitles and scripts.",
            inputs=[model_input("A Base model of the size the voice was made with."),
                    VoiceType.Input("voice", tooltip="From Make Voice from Reference Audio or Load Voice."),
                    _language_input(),
                    _name_input("Narrator")],
            outputs=_speaker_output())

    @classmethod
    def execute(cls, model, voice, language, name) -> io.NodeOutput:
        if not isinstance(voice, Voice):
            raise InputError("Connect a voice from 'Make Voice from Reference Audio' or 'Load Voice'.")
        return _speaker(model, "clone", name, language, voice=voice)


def _long_inputs() -> list[io.Input]:
    return [
        *sampling_inputs(),
        io.Int.Input("retries", default=2, min=0, max=10,
                     tooltip="Extra attempts (new seed) for a chunk that loops, stalls or never ends; "
                             "the run-away part is cut. Every retry is listed in the report."),
        io.Float.Input("chunk_seconds", default=20.0, min=3.0, max=120.0, step=1.0,
                       tooltip="About how long each generated piece is. Text is split at sentences "
                               "(then clauses) to fit."),
        io.Boolean.Input("normalize_text", default=True,
                         tooltip="Spell out numbers, dates and units for the language (e.g. '3 km' -> "
                                 "'three kilometres') and drop emoji. Off: the text is spoken as typed."),
    ]


def _output_inputs(per_line: bool) -> list[io.Input]:
    """Appended last (workflows map widget values by position; older ones get these defaults)."""
    return [loudness_input(), *([per_line_input()] if per_line else []), watermark_input()]


def _finish(audio, loudness: str, watermark, spans=None) -> tuple[torch.Tensor, list[str]]:
    """The track watermarked, then at its loudness (whole, or per line with `spans`), and the
    report lines saying what was done."""
    lines = [note(watermark)]
    audio = mark(watermark, audio, SAMPLE_RATE)
    audio, said = level_track(audio, SAMPLE_RATE, loudness, spans)
    return audio, [line for line in lines + [said] if line]


def _recipe(speaker, what: str = "speaker") -> SpeakerRecipe:
    if not isinstance(speaker, SpeakerRecipe):
        raise InputError(f"Connect a Qwen3-TTS Speaker node (built-in, designed or cloned voice) to '{what}'.")
    return speaker


def _normalization(on: bool) -> Normalization:
    return Normalization() if on else Normalization.off()


def _speakers(recipes: list[SpeakerRecipe], seed, temperature, top_k, top_p, repetition_penalty,
              retries, progress: ChunkProgress) -> dict:
    sampling, sub_sampling = sampling_settings(temperature, top_k, top_p, repetition_penalty)
    names = [r.name for r in recipes]
    for n in names:
        if not n:
            raise InputError("Every speaker of a script or multi-voice subtitles needs a name.")
        if names.count(n) > 1:
            raise InputError(f"Two speakers are named {n!r}; give each speaker its own name.")
    return {r.name: r.build(int(seed) + 1000 * i, sampling, sub_sampling, retries, progress.on_frame)
            for i, r in enumerate(recipes)}


class QwenTTSNarrate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSNarrate", display_name="Qwen3-TTS Narrate Long Text",
            category=CATEGORY,
            description="Any length of text in one voice: split at sentences, generated piece by piece "
                        "with the same voice, run-aways retried, joined with natural pauses.",
            inputs=[SpeakerType.Input("speaker", tooltip="The voice (a Qwen3-TTS Speaker node)."),
                    io.String.Input("text", multiline=True,
                                    default="Chapter one.\n\nIt was a bright cold day in April. The clocks "
                                            "were striking thirteen, and the city was still asleep.",
                                    tooltip="The text to read, any length. Blank lines make longer pauses."),
                    *_long_inputs(), *_output_inputs(per_line=False)],
            outputs=[io.Audio.Output("audio", display_name="audio", tooltip="The whole narration, 24 kHz mono."),
                     io.String.Output("report", display_name="report",
                                      tooltip="Chunks, retries and anything trimmed or worth a listen.")])

    @classmethod
    def execute(cls, speaker, text, seed, temperature, top_k, top_p, repetition_penalty, retries,
                chunk_seconds, normalize_text, loudness="off", watermark=False) -> io.NodeOutput:
        recipe = _recipe(speaker)
        marker = before_generating(loudness, watermark)
        progress = ChunkProgress()
        # one voice: its name plays no part (no name check), the seed as given
        sampling, sub_sampling = sampling_settings(temperature, top_k, top_p, repetition_penalty)
        voice = recipe.build(int(seed), sampling, sub_sampling, retries, progress.on_frame)
        out = run_interruptible(lambda: narrate(
            text, voice, max_seconds=chunk_seconds, normalization=_normalization(normalize_text),
            on_progress=progress))
        track, said = _finish(out.audio, loudness, marker)
        audio, _ = to_audio([track])
        return io.NodeOutput(audio, "\n".join([out.summary()] + said))


class QwenTTSSubtitleVoiceOver(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSSubtitleVoiceOver", display_name="Qwen3-TTS Subtitle Voice-over",
            category=CATEGORY,
            description="One audio track from subtitles (SRT or WebVTT): each line starts at its "
                        "time; lines too long for their slot are sped up (pitch kept) or flagged. "
                        "The track is as long as the video when one is connected (or video_seconds "
                        "when above 0); otherwise it ends with the last line.",
            inputs=[SpeakerType.Input("speaker", tooltip="The voice for lines without a speaker name."),
                    io.String.Input("subtitles", multiline=True,
                                    default="1\n00:00:00,500 --> 00:00:02,500\nHere is the view from the top.\n\n"
                                            "2\n00:00:03,000 --> 00:00:05,500\nTake a breath, and enjoy it.\n",
                                    tooltip="SRT or WebVTT text. 'Name: text' or WebVTT <v Name> picks a "
                                            "named speaker from the extra speaker inputs."),
                    io.Video.Input("video", optional=True,
                                   tooltip="The video the track is for: the track gets exactly its length."),
                    io.Float.Input("video_seconds", default=0.0, min=0.0, max=36000.0, step=0.1,
                                   tooltip="Track length when no video is connected (0 = until the last "
                                           "line ends)."),
                    io.Float.Input("max_speedup", default=1.3, min=1.0, max=2.0, step=0.05,
                                   tooltip="How much faster a line may be played to fit before its next "
                                           "line (pitch kept). 1 = never."),
                    io.Combo.Input("overflow", options=["shift", "cut"], default="shift",
                                   tooltip="A line that still does not fit: shift = let it finish and start "
                                           "the next one late; cut = fade it out at its slot's end. Both are "
                                           "listed in the report."),
                    *[SpeakerType.Input(f"speaker_{i}", optional=True,
                                        tooltip="Another named voice for lines that name it.")
                      for i in range(2, 5)],
                    *_long_inputs(), *_output_inputs(per_line=True)],
            outputs=[io.Audio.Output("audio", display_name="audio",
                                     tooltip="The voice-over track, 24 kHz mono: the video's length (or "
                                             "video_seconds), else until the last line ends."),
                     io.String.Output("report", display_name="report",
                                      tooltip="Lines sped up, shifted or cut, and chunk retries.")])

    @classmethod
    def execute(cls, speaker, subtitles, video_seconds, max_speedup, overflow, seed, temperature,
                top_k, top_p, repetition_penalty, retries, chunk_seconds, normalize_text, video=None,
                speaker_2=None, speaker_3=None, speaker_4=None, loudness="off", loudness_per_line=False,
                watermark=False) -> io.NodeOutput:
        marker = before_generating(loudness, watermark)
        recipes = [_recipe(speaker)] + [_recipe(s, f"speaker_{i}") for i, s in
                                        enumerate((speaker_2, speaker_3, speaker_4), 2) if s is not None]
        cues = parse_subtitles(subtitles)
        seconds = float(video.get_duration()) if video is not None else (video_seconds or None)
        progress = ChunkProgress()
        voices = _speakers(recipes, seed, temperature, top_k, top_p, repetition_penalty, retries, progress)
        track = run_interruptible(lambda: voice_over(
            cues, voices, default=voices[recipes[0].name], video_seconds=seconds, max_speedup=max_speedup,
            overflow=overflow, max_seconds=chunk_seconds, normalization=_normalization(normalize_text),
            on_progress=progress))
        # a line's speech: from its onset for its (sped-up) length
        spans = [(round(line.placed_at * SAMPLE_RATE), round((line.placed_at + line.speech_seconds) * SAMPLE_RATE))
                 for line in track.lines] if loudness_per_line else None
        audio, said = _finish(track.audio, loudness, marker, spans)
        audio, _ = to_audio([audio])
        report = "\n".join(track.flags + track.notes) or f"{len(cues)} lines placed on time"
        return io.NodeOutput(audio, "\n".join([report] + said))


class QwenTTSScript(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSScript", display_name="Qwen3-TTS Multi-speaker Script",
            category=CATEGORY,
            description="A dialogue from 'Name: line' text, each line in its speaker's voice (any mix "
                        "of built-in, designed and cloned voices), with pauses between turns.",
            inputs=[io.String.Input("script", multiline=True,
                                    default="Narrator: It was late when the phone rang.\n"
                                            "Anna: Hello? Who is this?\nNarrator: Nobody answered.",
                                    tooltip="One line per turn: 'Name: text'. 'Name (style): text' adds a "
                                            "style for built-in voices; [directions] are skipped; a blank "
                                            "line makes a longer pause."),
                    SpeakerType.Input("speaker_1", tooltip="A named voice (the names must match the script)."),
                    *[SpeakerType.Input(f"speaker_{i}", optional=True, tooltip="Another named voice.")
                      for i in range(2, MAX_SCRIPT_SPEAKERS + 1)],
                    *_long_inputs(), *_output_inputs(per_line=True)],
            outputs=[io.Audio.Output("audio", display_name="audio", tooltip="The whole dialogue, 24 kHz mono."),
                     io.Audio.Output("lines", display_name="lines", is_output_list=True,
                                     tooltip="Each line as its own clip, in script order."),
                     io.String.Output("report", display_name="report",
                                      tooltip="Lines, speakers, retries and notes.")])

    @classmethod
    def execute(cls, script, speaker_1, seed, temperature, top_k, top_p, repetition_penalty, retries,
                chunk_seconds, normalize_text, loudness="off", loudness_per_line=False, watermark=False,
                **more) -> io.NodeOutput:
        marker = before_generating(loudness, watermark)
        recipes = [_recipe(speaker_1, "speaker_1")] + [
            _recipe(more[k], k) for k in sorted(more) if k.startswith("speaker_") and more[k] is not None]
        progress = ChunkProgress()
        voices = _speakers(recipes, seed, temperature, top_k, top_p, repetition_penalty, retries, progress)
        out = run_interruptible(lambda: perform_script(
            script, voices, max_seconds=chunk_seconds, normalization=_normalization(normalize_text),
            pauses=Pauses(), on_progress=progress))
        spans = [(s.start, s.end) for s in out.segments] if loudness_per_line else None
        track, said = _finish(out.audio, loudness, marker, spans)
        audio, _ = to_audio([track])
        _, lines = to_audio([track[s.start:s.end] for s in out.segments])
        report = "\n".join([f"{len(out.segments)} lines: " + ", ".join(sorted(voices))] + out.notes + said)
        return io.NodeOutput(audio, lines, report)


NODES = [QwenTTSSpeakerBuiltIn, QwenTTSSpeakerDesigned, QwenTTSSpeakerCloned,
         QwenTTSNarrate, QwenTTSSubtitleVoiceOver, QwenTTSScript]
