"""Run-away generations: crafted code sequences trigger the detector at the right frame with the
right part kept; speech-like sequences never do; the speaker stops, trims, retries with another
seed and reports it, both on a scripted generator and on the fixture model forced into a loop."""
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from longform_helpers import fake_decode
from qwen_tts_core.longform.runaway import RunawayDetector, RunawayLimits, find_runaway
from qwen_tts_core.longform.synthesis import Speaker, VoiceSpec, seed_for
from qwen_tts_core.sampling import Sampling

pytestmark = pytest.mark.core


def speech_like(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2048, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("loop,reason,found_at,keep", [
    # 5-frame pattern after 100 frames of speech: found when it has covered 2.4 s (30 frames)
    (torch.tensor([5, 9, 13, 400, 7]).repeat(20), "repeating pattern", 129, 105),
    (torch.tensor([11, 900, 4, 3, 3, 71, 8, 1000, 2, 5, 6, 7, 12, 14]).repeat(5), "repeating pattern", 141, 114),
    # one code held (silence or hum): found after 3 s, half a second kept as a pause
    (torch.full((60,), 17), "stuck on one sound", 137, 106),
    (torch.tensor([3, 4]).repeat(30), "stuck on one sound", 137, 106),
    # wandering among four codes without a pattern: found when 4 s hold fewer than 5 codes
    (torch.tensor([1, 2, 3, 4])[torch.randint(0, 4, (80,), generator=torch.Generator().manual_seed(1))],
     "few distinct codes", 149, 100),
])
def test_crafted_runaways_are_found_where_they_start(loop, reason, found_at, keep):
    codes = torch.cat([speech_like(100), loop])
    found = find_runaway(codes)
    assert (found.reason, found.frame, found.keep) == (reason, found_at, keep)
    frames = torch.stack([codes] + [torch.zeros_like(codes)] * 15, dim=1)   # [T, 16] works too
    assert find_runaway(frames) == found


def test_speech_like_codes_and_short_pauses_pass():
    assert find_runaway(speech_like(5000)) is None
    # a 1 s pause (one code for 12 frames) and a repeated syllable (3 times) are speech
    speech = torch.cat([speech_like(50), torch.full((12,), 17), speech_like(50, 1),
                        torch.tensor([8, 9, 10]).repeat(3), speech_like(50, 2)])
    assert find_runaway(speech) is None


def test_detector_as_on_frame_stops_and_watches_one_item():
    detector = RunawayDetector(RunawayLimits(hold_seconds=1.0))
    frame = torch.full((1, 16), 5)
    stops = [detector(i, frame) for i in range(20)]
    assert stops.index(True) == 11 and detector.found.reason == "stuck on one sound"
    with pytest.raises(ValueError, match="one generation at a time"):
        RunawayDetector()(0, torch.zeros(2, 16, dtype=torch.long))


# ------------------------------------------------------------------ the speaker's retries
@dataclass
class Result:
    codes: list
    stopped: list


class ScriptedTTS:
    """A generator whose frames are scripted per seed: `script[seed] = (codebook-0 list, ends
    with end-of-speech)`. Honours on_frame returning True, like QwenTTS.generate."""
    model_type, speakers, languages = "custom_voice", ["vivian"], ["auto", "english"]
    folder = Path("Scripted")

    def __init__(self, script):
        self.script, self.calls = script, []

    def check(self, request):     # QwenTTS.check, which VoiceSpec calls: the scripted requests are valid
        return request

    def generate(self, requests, max_frames=None, sampling=None, sub_sampling=None, seed=None, on_frame=None):
        self.calls.append(dict(seed=seed, sampling=sampling, max_frames=max_frames))
        code0, ends = self.script[seed]
        frames = []
        for i, c in enumerate(code0[: max_frames or len(code0)]):
            frame = torch.full((1, 16), int(c))
            frames.append(frame)
            if on_frame is not None and on_frame(i, frame):
                ends = False
                break
        return Result([torch.cat(frames)], [ends and len(frames) == len(code0)])

    def decode(self, codes, voices):
        return fake_decode(codes, voices)


def test_runaway_is_stopped_trimmed_and_retried_with_another_seed():
    loop = torch.cat([speech_like(40), torch.tensor([5, 9, 13, 400]).repeat(50)]).tolist()
    clean = speech_like(60, 7).tolist()
    tts = ScriptedTTS({seed_for(0, 0, 0): (loop, True), seed_for(0, 0, 1): (clean, True)})
    take = Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=0).speak("Hello there.")
    assert [c["seed"] for c in tts.calls] == [seed_for(0, 0, 0), seed_for(0, 0, 1)]
    assert take.codes[:, 0].tolist() == clean
    r = take.report
    assert (r.attempts, r.clean, r.seed, r.trimmed_seconds) == (2, True, seed_for(0, 0, 1), 0.0)
    assert "repeating pattern from 3.5 s" in r.problems[0]   # one period kept: 44 frames
    assert take.audio.numel() == 60 * 1920


def test_when_every_attempt_runs_away_the_best_take_is_kept_trimmed():
    loop = torch.cat([speech_like(40), torch.tensor([5, 9, 13, 400]).repeat(50)]).tolist()
    hold = torch.cat([speech_like(10), torch.full((80,), 3)]).tolist()
    tts = ScriptedTTS({seed_for(0, 0, 0): (hold, True), seed_for(0, 0, 1): (loop, True)})
    # ~40 frames expected: the loop take (44 frames kept) is closer than the hold take (16 kept)
    take = Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=0, retries=1).speak(
        "Hello there, my dear friend, how are you today?")
    r = take.report
    # the generation stopped at detection (frame 69 of the loop take), 44 frames kept
    assert len(tts.calls) == 2 and (r.attempts, r.clean) == (2, False)
    assert take.codes.shape[0] == 44 and r.trimmed_seconds == pytest.approx((70 - 44) / 12.5)
    assert "stuck on one sound" in r.problems[0] and "repeating pattern" in r.problems[1]
    assert "listen to this chunk" in r.summary()


def test_no_end_of_speech_and_too_short_are_retried():
    long_text = "This sentence is long enough to take more than four seconds to say aloud."
    tts = ScriptedTTS({seed_for(5, 0, 0): (speech_like(30).tolist(), False),      # frame limit
                       seed_for(5, 0, 1): (speech_like(8).tolist(), True),         # 0.6 s for ~5 s
                       seed_for(5, 0, 2): (speech_like(70).tolist(), True)})
    take = Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=5).speak(long_text)
    assert take.report.attempts == 3 and take.report.clean and take.codes.shape[0] == 70
    assert "no end of speech" in take.report.problems[0] and "ended too early" in take.report.problems[1]


@pytest.mark.parametrize("sampling, sub_sampling, first", [
    (Sampling(do_sample=False), Sampling(do_sample=False), "attempt 1 (greedy): "),
    (Sampling(do_sample=False), None, f"attempt 1 (seed {seed_for(5, 0, 0)}): "),  # the code predictor samples
    (Sampling(), Sampling(do_sample=False), f"attempt 1 (seed {seed_for(5, 0, 0)}): "),
])
def test_a_report_names_the_seed_only_where_it_decided_the_take(sampling, sub_sampling, first):
    """Under greedy decoding any seed gives the same take, so the report says 'greedy' (a seed
    there would suggest that another one could help); a retry samples, and names its seed."""
    tts = ScriptedTTS({seed_for(5, 0, 0): (speech_like(30).tolist(), False),
                       seed_for(5, 0, 1): (speech_like(30).tolist(), True)})
    take = Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=5, sampling=sampling,
                   sub_sampling=sub_sampling).speak("Hello there.")
    assert take.report.problems == [first + "no end of speech (stopped at the frame limit, 2.4 s)"]


def test_on_frame_sees_every_frame_and_can_interrupt():
    tts = ScriptedTTS({seed_for(0, 0, 0): (speech_like(30).tolist(), True)})
    seen = []
    Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=0, on_frame=lambda i, f: seen.append(i)).speak("Hi.")
    assert seen == list(range(30))

    def interrupt(i, frame):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=0, on_frame=interrupt).speak("Hi.")


def test_greedy_retries_sample_instead_of_repeating_themselves():
    tts = ScriptedTTS({seed_for(0, 0, 0): (speech_like(30).tolist(), False),
                       seed_for(0, 0, 1): (speech_like(20).tolist(), True)})
    greedy = Sampling(do_sample=False)
    Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=0, sampling=greedy).speak("Hi.")
    assert tts.calls[0]["sampling"] is greedy and tts.calls[1]["sampling"] is None


def test_fixture_model_forced_into_a_loop_is_stopped_and_retried():
    """The real generation loop: a hook pins codebook 0 to one code during the first attempt."""
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    head = tts.model.talker.codec_head
    calls = []

    def pin_code(module, inputs, logits):
        if len(calls) == 1:                       # first attempt only
            logits = logits.clone()
            logits[..., 7] += 1e4
            return logits

    original = tts.generate

    lengths = []

    def counting_generate(*a, **k):
        calls.append(k["seed"])
        out = original(*a, **k)
        lengths.append(out.codes[0].shape[0])
        return out

    handle = head.register_forward_hook(pin_code)
    tts.generate = counting_generate
    try:
        speaker = Speaker(VoiceSpec.custom(tts, "vivian", "english"), seed=1, decode=fake_decode,
                          limits=RunawayLimits(hold_seconds=1.0), max_frames=14,
                          end_of_speech_required=False)
        take = speaker.speak("Hello there.")
    finally:
        handle.remove()
        del tts.generate
    r = take.report
    assert len(calls) == 2 and calls[0] != calls[1]
    assert lengths == [12, 14]          # the loop was ended at detection (12 frames, ~1 s)
    assert r.attempts == 2 and r.clean and "stuck on one sound" in r.problems[0]
    assert "one code for 1.0 s" in r.problems[0]
    assert (take.codes[:, 0] == 7).sum() < take.codes.shape[0]           # the kept take is not the loop
    assert find_runaway(take.codes, RunawayLimits(hold_seconds=1.0)) is None
