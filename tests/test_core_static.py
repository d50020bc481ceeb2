"""The static-shape frame step (the form captured as CUDA graphs) gives the same codes as the
dynamic one: greedy against the official goldens, and seeded sampling against the dynamic run."""
import pytest
import torch

from conftest import tiny_model
from test_parity import META, GOLDEN, official_max_frames, requests_of
from qwen_tts_core.sampling import Sampling

pytestmark = pytest.mark.core


@pytest.mark.parametrize("case", ["cv_batch", "cv_streaming_text", "base_icl", "vd_auto_streaming_text"])
def test_static_step_greedy_matches_goldens(case):
    model, reqs = requests_of(case)
    tts = tiny_model(model, speech_tokenizer=False)
    greedy = Sampling(do_sample=False, repetition_penalty=tts.defaults.repetition_penalty)
    out = tts.generate(reqs, max_frames=official_max_frames(case), sampling=greedy,
                       sub_sampling=Sampling(do_sample=False), static=True)
    assert [c.shape[0] for c in out.codes] == META["cases"][case]["lengths"]
    for i, codes in enumerate(out.codes):
        assert torch.equal(codes, GOLDEN[f"{case}.codes.{i}"])


def test_static_step_sampling_matches_dynamic():
    model, reqs = requests_of("cv_batch")
    tts = tiny_model(model, speech_tokenizer=False)
    runs = [tts.generate(reqs, max_frames=25, seed=11, static=static) for static in (False, True)]
    assert [c.shape for c in runs[0].codes] == [c.shape for c in runs[1].codes]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].codes, runs[1].codes))
    # and the two really are the two kinds of step: the dynamic one sized for this prompt, the
    # static one for its cache bucket (kept for later prompts)
    sampling = (Sampling(do_sample=False), Sampling(do_sample=False))
    dynamic, static = (tts.frame_loop(reqs, 25, *sampling, static=s).state for s in (False, True))
    prompt_len = max(len(p.embeds) for p in tts.build_prompts(reqs))
    assert (dynamic.static, dynamic.cache_len) == (False, prompt_len + 25)
    assert (static.static, static.cache_len) == (True, 256) and static in tts.steps.steps.values()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graph capture)")
def test_cuda_graphs_match_dynamic_on_gpu():
    from conftest import MODELS
    from qwen_tts_core.api import QwenTTS
    tts = QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cuda", speech_tokenizer=False)
    _, reqs = requests_of("cv_batch")
    greedy = Sampling(do_sample=False, repetition_penalty=1.05)
    runs = [tts.generate(reqs, max_frames=30, sampling=greedy, sub_sampling=Sampling(False), cuda_graphs=g)
            for g in (False, True)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].codes, runs[1].codes))
    sampled = [tts.generate(reqs, max_frames=30, seed=3, cuda_graphs=g) for g in (False, True)]
    assert all(torch.equal(a, b) for a, b in zip(sampled[0].codes, sampled[1].codes))
