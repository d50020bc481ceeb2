"""Long-form end to end with the real speech tokenizer on the fixture checkpoints: generation,
run-away checks and the codec's decode in one loop; a designed voice decoded with its carried
reference as context; a subtitle track from the model whose onsets land on the cue times; a
cloned voice made from reference audio; a script across three models.

(The fixture codec has random weights: its "speech" is loud noise without pauses, so onsets
are the first sample of each line and nothing is trimmed.)"""
import pytest
import torch

from conftest import AUDIO, tiny_model
from longform_helpers import SR, measured_onsets
from qwen_tts_core.audio import read_wav
from qwen_tts_core.longform import (Speaker, VoiceSpec, WavSink, narrate, perform_script, timed_lines,
                                    voice_over)

pytestmark = pytest.mark.core

FAST = dict(seed=0, retries=0, end_of_speech_required=False, min_reference_seconds=0)


def recording(speaker: Speaker) -> list:
    takes, speak = [], speaker.speak
    speaker.speak = lambda text, style=None: takes.append(speak(text, style)) or takes[-1]
    return takes


def test_narration_decodes_every_chunk_with_the_codec(tmp_path):
    tts = tiny_model("Tiny-CustomVoice")
    speaker = Speaker(VoiceSpec.custom(tts, "vivian", "english"), max_frames=6, **FAST)
    takes = recording(speaker)
    out = narrate("First paragraph.\n\nSecond paragraph.", speaker)
    assert [t.audio.numel() for t in takes] == [t.codes.shape[0] * 1920 for t in takes]
    assert torch.equal(takes[0].audio, tts.decode([takes[0].codes])[0])
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() > 0.01
    streamed = narrate("First paragraph.\n\nSecond paragraph.",
                       Speaker(VoiceSpec.custom(tts, "vivian", "english"), max_frames=6, **FAST),
                       sink=WavSink(tmp_path / "n.wav"))
    wav, rate = read_wav(streamed.audio)
    assert rate == SR and wav.shape[1] == out.audio.numel()
    assert (wav[0] - out.audio.clamp(-1, 1)).abs().max() < 1e-4      # same audio, 16-bit


def test_designed_voice_chunks_decode_with_the_reference_as_context():
    tts = tiny_model("Tiny-VoiceDesign")
    speaker = Speaker(VoiceSpec.design(tts, "A calm, low voice.", "english"), max_frames=6, **FAST)
    takes = recording(speaker)
    narrate("The first chunk.\n\nThe second chunk.", speaker)
    ref, second = takes[0].codes, takes[1]
    assert second.request.voice.ref_codes is speaker.carry.ref_codes and torch.equal(ref, speaker.carry.ref_codes)
    with_context = tts.codec.decode([torch.cat([ref, second.codes])])[0][ref.shape[0] * 1920:]
    alone = tts.codec.decode([second.codes])[0]
    assert second.audio.numel() == second.codes.shape[0] * 1920
    assert torch.allclose(second.audio, with_context, atol=1e-6)
    assert not torch.allclose(second.audio, alone, atol=1e-3)          # the context was used


def test_voice_over_from_the_model_lands_on_the_cue_times():
    tts = tiny_model("Tiny-CustomVoice")
    speaker = Speaker(VoiceSpec.custom(tts, "ryan", "english"), max_frames=10, **FAST)   # 0.8 s a line
    cues = timed_lines([(0.25, "Good evening."), (1.5, "The news."), (2.2, "Then the weather."),
                        (3.6, "Goodbye.")])
    track = voice_over(cues, speaker, video_seconds=5.0, max_speedup=1.5)
    assert track.audio.numel() == 5 * SR
    onsets = measured_onsets(track.audio, [c.start for c in cues], search=(-0.05, 0.3))
    errors_ms = [1000 * (o - c.start) for o, c in zip(onsets, cues)]
    print("model track onset errors (ms):", [round(e, 2) for e in errors_ms])
    assert all(abs(e) < 2 for e in errors_ms)                           # measured within 0.5 ms
    assert track.lines[1].speedup > 1.3 and not track.flags           # 0.8 s into a 0.6 s slot


def test_cloned_voice_from_reference_audio_end_to_end():
    tts = tiny_model("Tiny-Base")
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    prompt = tts.create_voice_clone_prompt(wav, rate, ref_text="This is a short reference clip.")
    speaker = Speaker(VoiceSpec.clone_of(tts, prompt, "english"), max_frames=6, **FAST)
    takes = recording(speaker)
    out = narrate("One.\n\nTwo.", speaker)
    assert all(t.request.voice is prompt for t in takes) and prompt.in_context
    assert out.audio.numel() > 0 and torch.isfinite(out.audio).all()


def test_script_across_three_models_with_the_codec():
    from test_longform_synthesis import golden_clone
    speakers = {
        "Host": Speaker(VoiceSpec.custom(tiny_model("Tiny-CustomVoice"), "ryan", "english"), max_frames=4, **FAST),
        "Guest": Speaker(VoiceSpec.design(tiny_model("Tiny-VoiceDesign"), "A bright voice.", "english"),
                         max_frames=4, **FAST),
        "Clone": Speaker(VoiceSpec.clone_of(tiny_model("Tiny-Base"), golden_clone(True), "english"),
                         max_frames=4, **FAST)}
    out = perform_script("Host: Welcome.\nGuest: Thanks.\nClone: Hello.\nGuest: Bye.", speakers)
    assert [s.speaker for s in out.segments] == ["Host", "Guest", "Clone", "Guest"]
    for i, s in enumerate(out.segments):
        assert out.segment_audio(i).numel() > 0.2 * SR                 # 4 frames of audio each
