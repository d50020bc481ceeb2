"""Sampling: our logits filters equal transformers' processors; seeded sampling is reproducible."""
import pytest
import torch
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from conftest import tiny_model
from qwen_tts_core.sampling import Sampling, filter_logits, penalize_repeats

pytestmark = pytest.mark.core


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.9, 50, 1.0), (0.7, 5, 0.8), (1.0, 0, 0.5), (1.3, 1, 1.0),
                                                    (2.0, 0, 1.0), (1.0, 0, 0.01)])
def test_filters_match_transformers(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2048, generator=g) * 3
    filtered = filter_logits(logits, Sampling(True, temperature, top_k, top_p))
    ours = filtered.softmax(-1)
    ref = logits.clone()
    ids = torch.zeros(3, 0, dtype=torch.long)
    if temperature != 1.0:
        ref = TemperatureLogitsWarper(temperature)(ids, ref)
    if top_k:
        ref = TopKLogitsWarper(top_k)(ids, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(ids, ref)
    assert torch.equal(torch.isfinite(filtered), torch.isfinite(ref))      # the same ids are kept
    assert torch.allclose(ours, ref.softmax(-1), atol=1e-7)


def test_top_p_drops_ids_whose_cumulative_share_reaches_the_cut_exactly():
    """Four equally likely ids (exact shares 0.25): top_p 0.5 keeps two, as transformers does."""
    logits = torch.zeros(1, 4)
    ours = filter_logits(logits, Sampling(True, 1.0, 0, 0.5))
    ref = TopPLogitsWarper(0.5)(torch.zeros(1, 0, dtype=torch.long), logits.clone())
    assert int(torch.isfinite(ours).sum()) == 2
    assert torch.equal(torch.isfinite(ours), torch.isfinite(ref))


@pytest.mark.parametrize("penalty", [1.05, 2.0])
def test_repetition_penalty_matches_transformers(penalty):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 100, generator=g)
    history = torch.tensor([[3, 7, 7, 50], [0, 99, 1, 2]])
    seen = torch.zeros(2, 100, dtype=torch.bool).scatter(1, history, True)
    ref = RepetitionPenaltyLogitsProcessor(penalty)(history, logits.clone())
    assert torch.equal(penalize_repeats(logits, seen, penalty), ref)
    assert not torch.equal(ref, logits)


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    kwargs = dict(text="A sampled sentence.", speaker="vivian", language="english", max_frames=12)
    a = tts.generate_custom_voice(seed=123, **kwargs).codes[0]
    b = tts.generate_custom_voice(seed=123, **kwargs).codes[0]
    c = tts.generate_custom_voice(seed=124, **kwargs).codes[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_the_noise_hash_is_the_same_on_python_ints_and_tensors_and_a_bijection():
    """mix32 gives the same numbers on Python ints (the item keys, made on the host) and on
    int64 tensors (the noise, made on the device), stays within 32 bits, and maps 2**16
    inputs to 2**16 outputs (lowbias32 is a bijection; no two slots or frames collide)."""
    from qwen_tts_core.generate import MASK32, mix32, mul32

    xs = [0, 1, 2, 12345, 2 ** 31, MASK32, 0xDEADBEEF]
    assert mix32(torch.tensor(xs)).tolist() == [mix32(x) for x in xs]
    assert [mul32(x, 0x846CA68B) for x in xs] == [(x * 0x846CA68B) % 2 ** 32 for x in xs]
    many = mix32(torch.arange(2 ** 16) * 65537)
    assert many.min() >= 0 and many.max() <= MASK32 and many.unique().numel() == 2 ** 16


def test_the_noise_is_exponential_and_independent():
    """The hashed noise behaves as Exp(1) draws: mean and variance 1, P(E > 1) = 1/e, and no
    correlation between neighbouring slots, consecutive draws or consecutive items (200k values;
    the bounds are about 5 standard errors)."""
    from qwen_tts_core.generate import exponential_noise, item_keys, slot_keys

    keys = torch.tensor(item_keys(2024, 4))
    slots = slot_keys(50_000, "cpu")
    draws = []
    for d in range(2):
        out = torch.empty(4, 50_000)
        exponential_noise(keys, torch.tensor(d), slots, out)
        draws.append(out)
    e = draws[0]
    assert abs(e.mean().item() - 1) < 0.012 and abs(e.var().item() - 1) < 0.03
    assert abs((e > 1).float().mean().item() - torch.e ** -1) < 0.006
    assert e.min() > 0 and torch.isfinite(e).all()

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].abs().item()

    assert corr(e[:, :-1], e[:, 1:]) < 0.012           # neighbouring slots
    assert corr(e, draws[1]) < 0.012                   # the next draw (frame)
    assert corr(e[:-1], e[1:]) < 0.012                 # the next item (seed + 1)


def test_the_exponential_race_on_the_hashed_noise_samples_the_distribution():
    """argmax(p / E) over the hashed noise picks id k with probability p_k (a chi-square test
    on 40k draws of 6 ids, one draw per noise row as in generation)."""
    from qwen_tts_core.generate import exponential_noise, item_keys, slot_keys
    from qwen_tts_core.sampling import choose

    p = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    logits = p.log().expand(40_000, 6)
    noise = torch.empty(40_000, 6)
    exponential_noise(torch.tensor(item_keys(7, 40_000)), torch.tensor(3), slot_keys(6, "cpu"), noise)
    ids = choose(logits, Sampling(True, 1.0, 0, 1.0), noise=noise)
    counts = torch.bincount(ids, minlength=6).float()
    expected = p * 40_000
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 25.7                                  # 5 degrees of freedom: p < 1e-4 by chance


def test_noise_is_computed_in_the_step_with_no_generator():
    """The step makes its noise itself (no torch random generator is used while generating,
    seeded or not: nothing for a CUDA graph to miss), and an unseeded generation takes its
    seed from torch's global generator: torch.manual_seed repeats it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountDraws(TorchDispatchMode):
        draws = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "exponential" in str(func) or "random" in str(func) or "uniform" in str(func):
                CountDraws.draws.append(str(func))
            return func(*args, **(kwargs or {}))

    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    texts = ["One line.", "Another line.", "A third."]
    with CountDraws():
        tts.generate_custom_voice(texts, "ryan", max_frames=6, seed=7)
    assert CountDraws.draws == []
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(tts.generate_custom_voice(texts, "ryan", max_frames=12).codes)
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_sampled_codes_are_audio_codes_only():
    """Control ids (2048..3071 except EOS) are never produced as audio codes."""
    tts = tiny_model("Tiny-VoiceDesign", speech_tokenizer=False)
    hot = Sampling(True, temperature=5.0, top_k=0, top_p=1.0)
    out = tts.generate_voice_design("Hot sampling.", "Any voice.", max_frames=30, seed=5,
                                    sampling=hot, sub_sampling=hot)
    codes = out.codes[0]
    assert codes.numel() > 0 and codes.min() >= 0 and codes.max() < 2048


def test_the_sampling_defaults_are_the_released_generation_config():
    """GenerationDefaults (a folder without generation_config.json) holds the released values,
    and Sampling's defaults are those (no repetition penalty unless asked)."""
    import json

    from conftest import MODELS
    from qwen_tts_core.config import GenerationDefaults

    released = json.loads((MODELS / "Tiny-CustomVoice" / "generation_config.json").read_text())
    d = GenerationDefaults()
    assert {k: getattr(d, k) for k in released if k != "max_new_tokens"} == {
        k: v for k, v in released.items() if k != "max_new_tokens"}
    assert Sampling() == Sampling(True, released["temperature"], released["top_k"], released["top_p"], 1.0)


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=0.0), r"^Talker temperature must be > 0 \(got 0.0\); turn sampling off for greedy decoding.$"),
    (dict(top_p=0.0), r"^Talker top_p must be in \(0, 1\] \(got 0.0\).$"),
    (dict(top_p=1.5), r"^Talker top_p must be in \(0, 1\] \(got 1.5\).$"),
    (dict(top_k=-1), r"^Talker top_k must be >= 0 \(got -1; 0 disables it\).$"),
    (dict(repetition_penalty=0.0), r"^Talker repetition penalty must be > 0 \(got 0.0\).$")])
def test_bad_sampling_settings_are_rejected(bad, message):
    from qwen_tts_core import InputError

    tts = tiny_model("Tiny-VoiceDesign", speech_tokenizer=False)
    with pytest.raises(InputError, match=message):
        tts.generate_voice_design("Hi.", "Any voice.", max_frames=3, sampling=Sampling(True, **{
            "temperature": 0.9, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.05, **bad}))
    with pytest.raises(InputError, match=message.replace("Talker", "Code predictor")):
        tts.generate_voice_design("Hi.", "Any voice.", max_frames=3, sub_sampling=Sampling(True, **{
            "temperature": 0.9, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.05, **bad}))
    assert Sampling(False, temperature=0.0).check("Talker").do_sample is False   # greedy needs no temperature


def test_on_frame_can_end_generation_early():
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    seen = []

    def stop_after_five(index, frame):
        seen.append(frame.clone())
        return index == 4

    out = tts.generate_custom_voice("Stop early please.", "vivian", max_frames=30, seed=3, on_frame=stop_after_five)
    assert out.codes[0].shape[0] == 5 and out.stopped == [False]
    assert torch.equal(out.codes[0], torch.stack(seen)[:, 0])


def test_sampling_draws_from_the_filtered_distribution():
    """The exponential race samples ids with the probabilities softmax(filtered logits) gives."""
    from qwen_tts_core.sampling import choose
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -8.0]]).repeat(40000, 1)
    s = Sampling(True, temperature=1.0, top_k=3, top_p=1.0)
    ids = choose(logits, s, torch.Generator().manual_seed(0))
    assert torch.equal(ids, choose(logits, s, torch.Generator().manual_seed(0)))   # the generator draws
    freq = torch.bincount(ids, minlength=5).float() / len(ids)
    expected = filter_logits(logits[:1], s).softmax(-1)[0]
    assert freq[3:].sum() == 0                      # outside the top-k: never drawn
    assert (freq - expected).abs().max() < 0.01     # 40k draws: ~0.0025 standard error


def test_fresh_noise_every_frame_when_only_one_side_samples():
    """With sampling on for the talker only, or for the code predictor only, every frame draws
    fresh noise. Talker only: the codes equal those of a run whose code predictor 'samples'
    with top_k = 1 (its argmax; the same draws are made either way), so noise drawn once and
    reused would show. Code predictor only: its codes depend on the seed (with no fresh noise
    it would pick the argmax every time)."""
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    on, argmax, greedy = Sampling(temperature=1.0, top_k=0), Sampling(top_k=1), Sampling(do_sample=False)

    def run(sampling, sub_sampling, seed=3):
        return tts.generate_custom_voice(["Fresh noise for every frame.", "Two."], "ryan", max_frames=12,
                                         seed=seed, sampling=sampling, sub_sampling=sub_sampling).codes

    talker_only, reference = run(on, greedy), run(on, argmax)
    assert all(torch.equal(a, b) for a, b in zip(talker_only, reference))
    assert not all(torch.equal(a, b) for a, b in zip(talker_only, run(on, greedy, seed=4)))
    sub_only, other_seed = run(greedy, on), run(greedy, on, seed=4)
    for a, b in zip(sub_only, other_seed):
        n = min(len(a), len(b))
        assert (a[:n, 1:] != b[:n, 1:]).float().mean() > 0.5
