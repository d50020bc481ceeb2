"""Long-form speech: texts of any length in one voice, subtitle-timed voice-over tracks and
multi-speaker scripts, on top of `QwenTTS`.

    from qwen_tts_core.longform import VoiceSpec, Speaker, narrate, voice_over, perform_script
    narrator = Speaker(VoiceSpec.custom(tts, "Ryan", language="english"), seed=1)
    out = narrate(book_text, narrator, on_progress=print)            # out.audio, out.reports
    track = voice_over(parse_subtitles(srt), narrator, video_seconds=93.4)
    dialogue = perform_script("Anna: Hi!\\nBen: Hello.", {"Anna": a, "Ben": b})

Modules: text (sentences and chunks), normalize (numbers, dates, units), languages (the
per-language tables), runaway (loop/stall detection), synthesis (VoiceSpec, Speaker), edit (trim,
fades, speed-up), subtitles (SRT/WebVTT), script (Name: line), track (the renderers).
"""
from .normalize import Normalization, normalize_text
from .runaway import Runaway, RunawayDetector, RunawayLimits, find_runaway
from .script import ScriptLine, parse_script
from .subtitles import Cue, parse_subtitles, timed_lines
from .synthesis import ChunkReport, Speaker, SpeechModel, Take, VoiceSpec
from .text import Chunk, chunk_text, split_sentences
from .track import (LineReport, MemorySink, Narration, Pauses, Progress, RenderProgress, ScriptAudio, Segment,
                    Track, WavSink, narrate, perform_script, voice_over)

__all__ = ["Normalization", "normalize_text", "Runaway", "RunawayDetector", "RunawayLimits",
           "find_runaway", "ScriptLine", "parse_script", "Cue", "parse_subtitles", "timed_lines",
           "ChunkReport", "Speaker", "SpeechModel", "Take", "VoiceSpec", "Chunk", "chunk_text", "split_sentences",
           "LineReport", "MemorySink", "Narration", "Pauses", "RenderProgress", "Progress", "ScriptAudio", "Segment",
           "Track", "WavSink", "narrate", "perform_script", "voice_over"]
