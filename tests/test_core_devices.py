"""Devices, precisions and the fast path, on CPU: no float64 after load (Apple MPS has none),
the dtype rules (capability queries monkeypatched), clear errors for a missing or busy device
and a dtype the device cannot run, per-item seeds, shape buckets kept between generations and
the CUDA-graph bookkeeping (with a stand-in for the graph), interruptible decoding."""
import copy
import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import MODELS, tiny_model
from test_parity import GOLDEN, official_max_frames, requests_of
from qwen_tts_core import api, device, generate
from qwen_tts_core.errors import DeviceError, InputError
from qwen_tts_core.sampling import Sampling
from qwen_tts_core.speech_codes import check_codes

pytestmark = pytest.mark.core

GREEDY_SUB = Sampling(do_sample=False)


def greedy(tts):
    return Sampling(do_sample=False, repetition_penalty=tts.defaults.repetition_penalty)


# ----------------------------------------------------------------------------- no float64
class DtypeRecorder(TorchDispatchMode):
    """Records every op that reads or makes a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.float64 = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if any(t.dtype == torch.float64 for t in tensors):
            self.float64.append(str(func))
        return out


def test_no_float64_op_in_generation_and_decoding_after_load():
    """MPS, XPU and DirectML have no float64: after loading, a sampled generation and its
    decode run no float64 op at all (the rotary tables are made in float64 once, at load)."""
    tts = tiny_model("Tiny-CustomVoice")
    recorder = DtypeRecorder()
    with recorder:
        out = tts.generate_custom_voice(["Hello there.", "A second line."], "vivian", max_frames=12,
                                        seed=3, decode=True)
    assert [c.shape[0] for c in out.codes] == [12, 12] and out.audio[0].numel() == 12 * 1920
    assert recorder.float64 == [], sorted(set(recorder.float64))[:5]


def test_rotary_tables_are_in_the_model_dtype_on_its_device():
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="bf16", device="cpu", speech_tokenizer=False)
    rotary = tts.model.talker.model.rotary
    assert rotary.cos.dtype == rotary.sin.dtype == torch.bfloat16
    assert rotary.cos.shape[0] == tts.config.talker.max_position_embeddings
    assert tts.model.talker.code_predictor.model.rotary.cos.shape[0] == tts.config.talker.num_code_groups
    # the table is the float64 formula, rounded (to float32, then the model dtype): position 1000
    inv = 1.0 / (tts.config.talker.rope_theta ** (torch.arange(0, 16, 2).float() / 16))
    want = (1000 * inv.double()).cos().float().to(torch.bfloat16)
    assert torch.equal(rotary.cos[1000], torch.cat([want, want]))


# ----------------------------------------------------------------------------- dtype rules
def fake_gpu(monkeypatch, capability, name):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    # torch's own answer counts emulation; the rule must not ask it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("capability,name,expected,why", [
    ((9, 0), "NVIDIA H100 80GB HBM3", torch.bfloat16, "bf16: native"),
    ((8, 6), "NVIDIA GeForce RTX 3090", torch.bfloat16, "bf16: native"),
    ((7, 5), "Tesla T4", torch.float16, "fp16: this GPU (Tesla T4, compute capability 7.5) has no native bf16"),
    ((7, 0), "Tesla V100-SXM2-16GB", torch.float16, "has no native bf16"),
    ((7, 5), "NVIDIA GeForce GTX 1660 SUPER", torch.float32, "neither native bf16 nor reliable fast fp16"),
    ((6, 1), "NVIDIA GeForce GTX 1080 Ti", torch.float32, "neither native bf16"),
])
def test_auto_dtype_on_cuda_gpus(monkeypatch, capability, name, expected, why):
    fake_gpu(monkeypatch, capability, name)
    dtype, reason = api.auto_dtype(torch.device("cuda", 0))
    assert dtype == expected and why in reason and name in reason


def test_auto_dtype_elsewhere():
    assert api.auto_dtype(torch.device("cpu")) == (torch.float32, "fp32: half precision is not faster on cpu")
    dtype, reason = api.auto_dtype(torch.device("mps"))
    assert dtype == torch.float16 and "Apple MPS" in reason


def test_emulated_bf16_is_allowed_when_asked_for_but_said(monkeypatch, caplog):
    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    monkeypatch.setattr(device, "check_dtype_runs", lambda dtype, device: None)
    with caplog.at_level(logging.WARNING, logger="qwen_tts_core"):
        dtype, reason = api.choose_dtype("bf16", torch.device("cuda", 0))
    assert dtype == torch.bfloat16 and "emulated" in reason and "fp16" in reason
    assert "bf16 is emulated on Tesla T4" in caplog.text


def test_a_dtype_the_device_cannot_run_is_refused_clearly(monkeypatch):
    real = torch.nn.functional.scaled_dot_product_attention

    def no_half(q, *a, **k):
        if q.dtype == torch.float16:
            raise RuntimeError('"baddbmm_with_gemm" not implemented for \'Half\'\nmore')
        return real(q, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_half)
    with pytest.raises(DeviceError) as e:
        api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp16", device="cpu", speech_tokenizer=False)
    assert str(e.value) == ("cpu cannot compute in float16 (\"baddbmm_with_gemm\" not implemented for 'Half'). "
                            "Choose dtype auto (it picks what this device supports) or fp32.")
    assert api.choose_dtype("fp32", torch.device("cpu"))[0] == torch.float32      # fp32 still fine
    with pytest.raises(InputError, match="Unknown dtype 'int8'"):
        api.choose_dtype("int8", torch.device("cpu"))


# ----------------------------------------------------------------------------- devices
def test_a_device_that_does_not_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"'cuda:3' does not exist: this machine has 2 CUDA GPU\(s\), "
                                          r"cuda:0..cuda:1\. Choose one of those, or auto\."):
        api.resolve_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no usable CUDA GPU"):
        api.resolve_device("cuda")
    with pytest.raises(DeviceError, match="Unknown device 'tpu"):
        api.resolve_device("tpu")


def test_a_busy_device_says_so(monkeypatch):
    real = torch.ones

    def busy(*a, device=None, **k):
        if device is not None and torch.device(device).type != "cpu":
            raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable\nCompile with ...")
        return real(*a, device=device, **k)

    monkeypatch.setattr(torch, "ones", busy)
    with pytest.raises(DeviceError) as e:
        api.probe_device(torch.device("meta"))
    assert str(e.value) == ("Device meta cannot be used right now (CUDA error: all CUDA-capable devices are "
                            "busy or unavailable). It may be busy with another program or its driver may "
                            "have failed: close that program, or choose another device (cpu works everywhere).")


def test_first_line_of_an_error():
    from qwen_tts_core.errors import first_line

    assert first_line(RuntimeError("\n  CUDA error: busy  \nCompile with TORCH_USE_CUDA_DSA")) == "CUDA error: busy"
    assert first_line(torch.OutOfMemoryError()) == "OutOfMemoryError"
    assert first_line(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"


# ----------------------------------------------------------------------------- seeds per item
def test_an_item_gets_the_same_codes_alone_as_in_a_batch():
    """Item i samples from seed + i: the same text, seed and settings give the same codes
    alone or batched with other lines (fp32, sampling on in both the talker and the code
    predictor)."""
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    texts = ["The first line of the batch.", "Second.", "And a third, rather longer, line of text here."]
    batch = tts.generate_custom_voice(texts, "ryan", max_frames=20, seed=41)
    for i, text in enumerate(texts):
        alone = tts.generate_custom_voice(text, "ryan", max_frames=20, seed=41 + i)
        assert torch.equal(alone.codes[0], batch.codes[i]), f"item {i}"
    # and the seed matters: another seed gives other codes
    assert not torch.equal(tts.generate_custom_voice(texts[0], "ryan", max_frames=20, seed=42).codes[0],
                           batch.codes[0])


def test_item_seeds_wrap_at_2_to_the_64():
    keys = generate.item_keys(2 ** 64 - 1, 2)
    assert keys == [generate.item_keys(2 ** 64 - 1, 1)[0], generate.item_keys(0, 1)[0]]
    assert len(set(generate.item_keys(0, 1000))) == 1000       # one key per seed
    assert generate.item_keys(2 ** 32, 1) != generate.item_keys(0, 1)   # the high half counts


# ----------------------------------------------------------------------------- shape buckets
def test_cache_buckets():
    assert [generate.cache_bucket(n, 32768) for n in (1, 256, 257, 600, 1025)] == [256, 256, 512, 1024, 2048]
    assert generate.cache_bucket(30000, 32768) == 32768 and generate.cache_bucket(700, 600) == 700


def test_static_steps_are_kept_per_bucket_and_reused_across_prompts():
    """Two different prompts of one bucket run in the same kept step (its caches and buffers),
    and each gets exactly the golden greedy codes (a stale buffer would change them)."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    kept = []
    # the batch, the same batch in reverse order (other left pads per row), another batch size
    for case, order in (("cv_batch", [0, 1, 2]), ("cv_batch", [2, 1, 0]), ("cv_streaming_text", [0])):
        _, reqs = requests_of(case)
        loop = tts.frame_loop([reqs[i] for i in order], official_max_frames(case), greedy(tts), GREEDY_SUB,
                              static=True)
        kept.append(loop.state)
        frames = generate.collect(loop)
        for codes, i in zip(frames.codes, order):
            assert torch.equal(codes, GOLDEN[f"{case}.codes.{i}"]), (case, i)
    assert kept[0] is kept[1]                                       # same batch size and bucket
    assert len(tts.steps.steps) == 2 and kept[2] is not kept[0]     # cv_streaming_text: batch of 1
    # another prompt of that batch size and bucket reuses it
    _, reqs = requests_of("cv_en")
    assert tts.frame_loop(reqs, 5, greedy(tts), GREEDY_SUB, static=True).state is kept[2]
    # a third shape (a longer cache: bucket 512) evicts the least recently used
    third = tts.frame_loop(reqs, 300, greedy(tts), GREEDY_SUB, static=True).state
    assert third.cache_len == 512 and list(tts.steps.steps.values()) == [kept[2], third]
    # weights that moved (ComfyUI offload/reload) drop every kept step
    tts.model.talker.codec_head.weight.data = tts.model.talker.codec_head.weight.data.clone()
    assert tts.frame_loop(reqs, 5, greedy(tts), GREEDY_SUB, static=True).state is not kept[2]
    assert len(tts.steps.steps) == 1
    tts.release_steps()
    assert tts.steps.steps == {}


def test_static_and_dynamic_steps_give_the_same_sampled_codes_in_fp32():
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    _, reqs = requests_of("cv_batch")
    runs = [tts.generate(reqs, max_frames=25, seed=11, static=static) for static in (False, True, True)]
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0].codes, other.codes))


@pytest.mark.parametrize("graphs", [False, True])
def test_a_generation_while_a_loop_of_its_shape_runs_gets_a_step_of_its_own(graphs, request, caplog):
    """A second generation of the same shape bucket, started while the first is between two
    frames (a stream being read), must not re-start the first one's kept step: it runs in a
    fresh step (saying so in the log), and both get their golden codes. The kept step is free
    again afterwards."""
    tts = request.getfixturevalue("fake_graphs") if graphs else api.QwenTTS.from_pretrained(
        MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    caplog.set_level(logging.INFO, logger="qwen_tts_core")
    _, reqs = requests_of("cv_batch")
    n, others = official_max_frames("cv_batch"), []
    loop = tts.frame_loop(reqs, n, greedy(tts), GREEDY_SUB, static=True)

    def interleave(index, frame):
        if index == 4:
            inner = tts.frame_loop(reqs[::-1], n, greedy(tts), GREEDY_SUB, static=True)
            others.append(inner.state)
            others.append(generate.collect(inner))

    first = generate.collect(loop, interleave)
    second_state, second = others
    assert second_state is not loop.state and list(tts.steps.steps.values())[-1] is not second_state
    assert [r.getMessage() for r in caplog.records if "still running" in r.getMessage()] == [
        "A generation of this shape is still running (a stream not read to the end); this one runs in a "
        "step of its own"]
    for i, codes in enumerate(first.codes):
        assert torch.equal(codes, GOLDEN[f"cv_batch.codes.{i}"]), f"first, item {i}"
    for codes, i in zip(second.codes, [2, 1, 0]):
        assert torch.equal(codes, GOLDEN[f"cv_batch.codes.{i}"]), f"second, item {i}"
    assert tts.frame_loop(reqs, n, greedy(tts), GREEDY_SUB, static=True).state is loop.state
    with pytest.raises(RuntimeError) as e:
        list(loop)
    assert str(e.value) == "A FrameLoop runs once; make a new one (QwenTTS.frame_loop) to generate again."


def test_an_abandoned_stream_frees_its_kept_step_and_an_unfinished_one_blocks_nothing():
    """A stream read only in part holds its kept step: meanwhile a generation of the same shape
    runs in a step of its own (same codes, not refused); once the stream is dropped, the kept
    step serves the next generation again."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu")
    _, reqs = requests_of("cv_batch")
    options = dict(max_frames=official_max_frames("cv_batch"), sampling=greedy(tts), sub_sampling=GREEDY_SUB,
                   static=True)
    tts.generate(reqs, **options)
    (kept,) = tts.steps.steps.values()
    stream = tts.stream(reqs, chunk_frames=2, **options)
    next(stream)                                           # two frames in, then left unfinished
    assert tts.frame_loop(reqs, **options).state is not kept
    out = tts.generate(reqs, **options)
    assert all(torch.equal(c, GOLDEN[f"cv_batch.codes.{i}"]) for i, c in enumerate(out.codes))
    del stream                                             # abandoned: its step is free again
    assert tts.frame_loop(reqs, **options).state is kept
    assert list(tts.steps.steps.values()) == [kept]


# ----------------------------------------------------------------------------- CUDA graph bookkeeping
class FakeGraph:
    """Stands in for a captured CUDA graph on CPU: replay runs the static step again, after
    checking that every buffer the step reads is still the tensor it was at capture (a real
    graph keeps reading the captured addresses; a replaced buffer would be silently ignored)."""
    captures = 0
    replays = 0

    def __init__(self, state):
        self.state = state
        self.addresses = {k: v.data_ptr() for k, v in state.buffers().items()}
        FakeGraph.captures += 1

    def replay(self):
        FakeGraph.replays += 1
        now = {k: v.data_ptr() for k, v in self.state.buffers().items()}
        assert now == self.addresses, [k for k in now if now[k] != self.addresses.get(k)]
        self.state.step()


@pytest.fixture
def fake_graphs(monkeypatch):
    """CUDA graphs 'on' for a CPU model, with FakeGraph as the captured graph."""
    FakeGraph.captures = FakeGraph.replays = 0
    monkeypatch.setattr(generate.GraphedStep, "_side_stream", lambda self: None)
    monkeypatch.setattr(generate.GraphedStep, "_eager_on_side_stream", lambda self: self.state.step())
    monkeypatch.setattr(generate.GraphedStep, "_capture", lambda self: FakeGraph(self.state))
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    monkeypatch.setattr(tts.engine, "uses_cuda_graphs", lambda cuda_graphs=None: cuda_graphs is not False)
    return tts


def test_the_graph_stand_in_sees_a_replaced_code_predictor_cache(fake_graphs):
    """`buffers()` lists every tensor a captured step uses, the code predictor's KV caches
    included: a replaced one (which a real graph would silently ignore) fails the replay."""
    tts = fake_graphs
    tts.generate_custom_voice("Hello.", "ryan", max_frames=4, seed=1)     # 2 warm-up frames, then capture
    (kept,) = tts.steps.steps.values()
    assert FakeGraph.captures == 1
    kept.state.sub_caches[0].k = kept.state.sub_caches[0].k.clone()
    with pytest.raises(AssertionError, match="sub_cache0.k"):
        tts.generate_custom_voice("Hello.", "ryan", max_frames=4, seed=1)


def test_graph_captured_once_per_bucket_and_replayed_for_later_prompts(fake_graphs):
    tts = fake_graphs
    frames = 0
    for case in ("cv_batch", "cv_batch"):
        _, reqs = requests_of(case)
        out = tts.generate(reqs, max_frames=official_max_frames(case), sampling=greedy(tts), sub_sampling=GREEDY_SUB)
        for i, codes in enumerate(out.codes):
            assert torch.equal(codes, GOLDEN[f"{case}.codes.{i}"])
        frames += max(c.shape[0] for c in out.codes)
    # captured once (a failed capture would fall back to the eager step: same codes), and every
    # frame after the 2 warm-up frames of the first prompt is a replay
    assert FakeGraph.captures == 1 and FakeGraph.replays == frames - 2
    # sampled: graphs (kept step, replayed) == the dynamic step
    _, reqs = requests_of("cv_batch")
    graphed = tts.generate(reqs, max_frames=25, seed=5)
    eager = tts.generate(reqs, max_frames=25, seed=5, cuda_graphs=False)
    assert all(torch.equal(a, b) for a, b in zip(graphed.codes, eager.codes))


def test_a_generation_says_whether_its_frames_replayed_a_graph(fake_graphs, monkeypatch):
    """GenerationResult.ran / replayed say what really ran (not whether graphs were asked for):
    the first generation of a shape warms up on 2 frames and replays the rest, the next one
    replays every frame; without graphs the eager step; a shape whose capture failed says so,
    and why, in the result and in graph_fallbacks (the loader's info line)."""
    tts = fake_graphs
    _, reqs = requests_of("cv_batch")
    options = dict(max_frames=10, sampling=greedy(tts), sub_sampling=GREEDY_SUB)
    first, second = (tts.generate(reqs, **options) for _ in range(2))
    frames = max(len(c) for c in first.codes)
    assert (first.replayed, first.cuda_graph) == (frames - 2, True)
    assert first.ran == f"CUDA graph ({frames - 2} of {frames} frames replayed)"
    assert second.ran == f"CUDA graph ({frames} of {frames} frames replayed)"
    eager = tts.generate(reqs, cuda_graphs=False, **options)
    assert (eager.ran, eager.replayed, eager.cuda_graph) == ("eager step (dynamic shapes)", 0, False)
    assert tts.generate(reqs, cuda_graphs=False, static=True, **options).ran == "eager step (static shapes)"
    assert tts.graph_fallbacks() == []

    def fail(self):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(generate.GraphedStep, "_capture", fail)
    failed = tts.generate(reqs[:2], **options)
    assert (failed.replayed, failed.cuda_graph) == (0, False)
    assert failed.ran == ("eager step (CUDA graph capture failed: RuntimeError: CUDA error: operation not "
                          "permitted when stream is capturing)")
    assert tts.graph_fallbacks() == ["batch 2, cache 256: RuntimeError: CUDA error: operation not permitted "
                                     "when stream is capturing"]


def test_a_gpu_that_stops_answering_gets_a_message_that_says_what_to_do(caplog):
    """A CUDA error in the middle of generation (a driver reset, a GPU off the bus) names the
    device and what to do, and drops the kept steps; other errors keep their own message."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    tts.generate_custom_voice("Kept.", "ryan", max_frames=3, static=True)

    def lost(index, frame):
        raise torch.AcceleratorError("CUDA error: unspecified launch failure\nCUDA kernel errors might be ...")

    with pytest.raises(DeviceError) as e:
        tts.generate_custom_voice("Hello.", "ryan", max_frames=5, on_frame=lost)
    assert str(e.value) == (
        "The device cpu stopped working (CUDA error: unspecified launch failure); its driver may have reset "
        "or the GPU may have failed. Nothing more can run on it in this process: save your work, restart "
        "ComfyUI (check the GPU with nvidia-smi first), or choose device cpu.")
    assert tts.steps.steps == {}

    def other(index, frame):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        tts.generate_custom_voice("Hello.", "ryan", max_frames=5, on_frame=other)

    def assertion(index, frame):
        raise torch.AcceleratorError("CUDA error: device-side assert triggered\nCompile with ...")

    with pytest.raises(DeviceError, match=r"stopped working \(CUDA error: device-side assert triggered\); a GPU "
                                          r"kernel stopped on an assertion \(a bug: please report it"):
        tts.generate_custom_voice("Hello.", "ryan", max_frames=5, on_frame=assertion)

    def full(index, frame):
        raise torch.AcceleratorError("CUDA error: out of memory\nCUDA kernel errors might be ...")

    with pytest.raises(torch.AcceleratorError, match="^CUDA error: out of memory"):   # a full GPU, not a lost one
        tts.generate_custom_voice("Hello.", "ryan", max_frames=5, on_frame=full)


def test_a_gpu_lost_while_decoding_or_streaming_says_so_too(monkeypatch):
    """Decoding (every node decodes after generating) and streaming get the same message."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu")

    def lost(*a, **k):
        raise torch.AcceleratorError("CUDA error: unspecified launch failure")

    monkeypatch.setattr(tts.codec.decoder, "forward", lost)
    with pytest.raises(DeviceError, match=r"^The device cpu stopped working \(CUDA error: unspecified launch"):
        tts.generate_custom_voice("Hello.", "ryan", max_frames=3, decode=True)
    monkeypatch.setattr(type(tts.codec), "streaming_decoder", lambda self, *a, **k: (_ for _ in ()).throw(
        torch.AcceleratorError("CUDA error: unspecified launch failure")))
    with pytest.raises(DeviceError, match="stopped working"):
        list(tts.stream([api.Request("Hello.", "english", "ryan")], max_frames=3))


def test_the_device_reads_back_every_few_frames_and_runs_at_most_one_block_ahead():
    """The loop launches `check_every` frames, then reads them back while the next block runs:
    the frames, the end of each item and the codes are those of a loop that reads every frame,
    and a consumer that stops (an interrupt) stops the device within 2 * check_every - 1 frames."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    _, reqs = requests_of("cv_batch")
    n = official_max_frames("cv_batch")
    for check_every in (1, 3, 4, 64):
        for ahead in (True, False):
            loop = tts.frame_loop(reqs, n, greedy(tts), GREEDY_SUB, check_every=check_every, ahead=ahead)
            frames = generate.collect(loop)
            assert [len(c) for c in frames.codes] == [len(GOLDEN[f"cv_batch.codes.{i}"]) for i in range(3)]
            for i, codes in enumerate(frames.codes):
                assert torch.equal(codes, GOLDEN[f"cv_batch.codes.{i}"]), (check_every, ahead, i)
            longest = max(len(c) for c in frames.codes)
            past = 2 * check_every - 1 if ahead else check_every - 1    # frames run past the last end
            assert longest <= loop.frames_run <= min(n, longest + past), (check_every, ahead, loop.frames_run)

    class Stop(Exception):
        pass

    def stop_at_5(index, frame):
        if index == 5:
            raise Stop

    loop = tts.frame_loop(reqs, 40, greedy(tts), GREEDY_SUB, check_every=4)
    with pytest.raises(Stop):
        generate.collect(loop, stop_at_5)
    assert loop.frames_run == 12                   # frames 0-7 read back, 8-11 already launched


def generate_golden_cv_batch(tts, times: int) -> None:
    _, reqs = requests_of("cv_batch")
    for _ in range(times):
        out = tts.generate(reqs, max_frames=official_max_frames("cv_batch"), sampling=greedy(tts),
                           sub_sampling=GREEDY_SUB)
        for i, codes in enumerate(out.codes):
            assert torch.equal(codes, GOLDEN[f"cv_batch.codes.{i}"])


def capture_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "capture" in r.getMessage()]


@pytest.mark.parametrize("error,said", [
    (RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore"),
     "RuntimeError: CUDA error: operation not permitted when stream is capturing"),
    (AssertionError(), "AssertionError: AssertionError"),     # no message: its type names it
])
def test_a_capture_that_cannot_be_done_falls_back_to_the_eager_step_for_good_with_one_log_line(
        fake_graphs, monkeypatch, caplog, error, said):
    tts = fake_graphs
    attempts = []

    def fail(self):
        attempts.append(1)
        raise error

    monkeypatch.setattr(generate.GraphedStep, "_capture", fail)
    with caplog.at_level(logging.WARNING, logger="qwen_tts_core"):
        generate_golden_cv_batch(tts, 3)
    assert len(attempts) == 1                                   # not tried again for that bucket
    assert capture_lines(caplog) == [
        f"CUDA graph capture failed ({said}); this batch shape runs the eager step instead (slower, same "
        "codes). Turn cuda_graphs off to skip the attempt."]


def test_a_capture_out_of_memory_is_tried_again_by_the_next_generation(fake_graphs, monkeypatch, caplog):
    """Out of memory during capture is not a property of the step: memory may be free by the
    next generation, which captures again (once, at its first frame); meanwhile the step runs
    eager with the same codes. Once captured, the graph is replayed as usual."""
    tts = fake_graphs
    attempts, real_capture = [], generate.GraphedStep._capture
    out_of_memory = {"on": True}

    def capture(self):
        attempts.append(1)
        if out_of_memory["on"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_capture(self)

    monkeypatch.setattr(generate.GraphedStep, "_capture", capture)
    with caplog.at_level(logging.WARNING, logger="qwen_tts_core"):
        generate_golden_cv_batch(tts, 2)
    assert len(attempts) == 2 and FakeGraph.captures == 0       # one try per generation
    assert capture_lines(caplog) == [
        "CUDA graph capture failed (OutOfMemoryError: out of GPU memory during capture); this batch shape "
        "runs the eager step until the next generation tries again (slower, same codes). Turn cuda_graphs "
        "off to skip the attempt."] * 2
    out_of_memory["on"] = False                                 # memory was freed meanwhile
    generate_golden_cv_batch(tts, 2)
    assert len(attempts) == 3 and FakeGraph.captures == 1       # captured once, then replayed
    # at the first frame of the generation after the failed one: every frame since is a replay
    frames = max(GOLDEN[f"cv_batch.codes.{i}"].shape[0] for i in range(len(requests_of("cv_batch")[1])))
    assert FakeGraph.replays == 2 * frames
    (kept,) = tts.steps.steps.values()
    assert kept.graph is not None and kept.failed is None


def test_an_interrupt_during_capture_leaves_the_model_usable(fake_graphs, monkeypatch):
    """An interrupt (Ctrl-C) that lands while the graph is being captured is not a capture
    failure: it stops the generation, the step is not marked as failed, and the next
    generation captures and gives the golden codes."""
    tts = fake_graphs
    real_capture, calls = generate.GraphedStep._capture, []

    def interrupted_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_capture(self)

    monkeypatch.setattr(generate.GraphedStep, "_capture", interrupted_once)
    _, reqs = requests_of("cv_batch")
    with pytest.raises(KeyboardInterrupt):
        tts.generate(reqs, max_frames=official_max_frames("cv_batch"), sampling=greedy(tts), sub_sampling=GREEDY_SUB)
    (kept,) = tts.steps.steps.values()
    assert kept.failed is None and kept.graph is None and not kept.state.busy
    generate_golden_cv_batch(tts, 1)
    assert len(calls) == 2 and kept.graph is not None and FakeGraph.captures == 1


def test_interrupt_stops_a_graphed_generation_and_the_next_one_works(fake_graphs):
    tts = fake_graphs
    _, reqs = requests_of("cv_batch")
    seen = []

    def cancel(index, frame):
        seen.append(index)
        if index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tts.generate(reqs, max_frames=20, sampling=greedy(tts), sub_sampling=GREEDY_SUB, on_frame=cancel)
    assert seen == [0, 1, 2, 3]                                 # within one frame, every frame seen
    out = tts.generate(reqs, max_frames=official_max_frames("cv_batch"), sampling=greedy(tts), sub_sampling=GREEDY_SUB)
    assert all(torch.equal(c, GOLDEN[f"cv_batch.codes.{i}"]) for i, c in enumerate(out.codes))


# ----------------------------------------------------------------------------- decoding
def test_decode_checks_between_chunks_and_stops_when_asked(monkeypatch):
    tts = tiny_model("Tiny-CustomVoice")
    codes = [torch.randint(0, 2048, (70, 16)), torch.randint(0, 2048, (40, 16))]
    whole = tts.decode(codes)
    monkeypatch.setattr(type(tts.codec), "decode_chunk_frames", lambda self, batch, device=None: 16)
    calls = []
    chunked = tts.decode(codes, on_chunk=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 70), (16, 70), (32, 70), (48, 70), (64, 70)]
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-4

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 32:
            raise Stop

    with pytest.raises(Stop):
        tts.decode(codes, on_chunk=stop)


def test_decode_chunk_bounds_the_batch_memory():
    tok = tiny_model("Tiny-CustomVoice").codec
    per_frame = tok.decoder.activation_bytes(1, tok.dtype)
    assert tok.decode_chunk_frames(1) == 300                    # tiny decoder: the official 300
    from qwen_tts_core.codec import tokenizer
    for batch in (1, 4, 64):
        chunk = tok.decode_chunk_frames(batch)
        assert 1 <= chunk <= 300
        assert chunk == 300 or batch * chunk * per_frame <= tokenizer.DECODE_BUDGET



def test_decode_chunk_on_cuda_follows_the_free_memory(monkeypatch):
    """On CUDA the budget is half of the memory free there (the driver's free memory plus what
    torch's allocator holds unused); if CUDA cannot say, the constant. CUDA's answers are
    stood in for here (no GPU)."""
    from qwen_tts_core.codec import tokenizer

    tok = tiny_model("Tiny-CustomVoice").codec
    per_frame, cuda = tok.decoder.activation_bytes(1, tok.dtype), torch.device("cuda")
    # a batch of 4: 56 frames' worth free in the driver, 24 held unused by torch -> 40 frames a call
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 56 * per_frame, 10**12))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 4 * 30 * per_frame)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 4 * 6 * per_frame)
    assert tokenizer.decode_budget(cuda) == 4 * 40 * per_frame
    assert tok.decode_chunk_frames(4, cuda) == 40
    assert tok.decode_bytes(4, 100, cuda) == 4 * tok.decoder.activation_bytes(40, tok.dtype)
    assert tok.decode_chunk_frames(4) == 300                    # the decoder itself is on the CPU

    def no_cuda(device=None):
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_cuda)
    assert tokenizer.decode_budget(cuda) == tokenizer.DECODE_BUDGET


# ----------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("case", ["cv_batch", "vd_auto_streaming_text", "base_xvec"])
def test_half_precision_first_step_logits_and_no_overflow(case):
    """fp16 and bf16 on the fixtures (CPU): first-step logits close to the fp32 goldens
    (measured max |diff|: fp16 <= 0.0064, bf16 <= 0.046, logits span ~3.3-4.6), and a whole
    fp16 generation without overflow (the per-frame check would raise)."""
    from qwen_tts_core.generate import collate, prefill

    name, reqs = requests_of(case)
    for dtype, tol in (("fp16", 0.02), ("bf16", 0.1)):
        tts = api.QwenTTS.from_pretrained(MODELS / name, dtype=dtype, device="cpu", speech_tokenizer=False)
        talker = tts.model.talker
        with torch.inference_mode():
            batch = collate(tts.build_prompts(reqs), talker.embed_text(torch.tensor([tts.config.tts_pad_token_id]))[0])
            caches = talker.model.new_caches(batch.embeds.shape[0], batch.embeds.shape[1], tts.dtype, "cpu")
            logits = talker.codec_head(prefill(talker, batch, caches)).float()
        diff = (logits - GOLDEN[f"{case}.logits"]).abs().max().item()
        print(f"{case} {dtype}: first-step logits max |diff| vs fp32 = {diff:.2g}")
        assert torch.isfinite(logits).all() and diff < tol
        if dtype == "fp16":   # a whole generation: the per-frame overflow check raises on inf/NaN
            out = tts.generate(reqs, max_frames=20, seed=2)
            assert len(out.codes) == len(reqs)
            for codes, stopped in zip(out.codes, out.stopped):
                check_codes(codes)                       # [frames, 16] integer codes in 0..2047
                assert stopped or codes.shape[0] == 20   # ended by end-of-speech, else at the limit


def test_overflow_stops_generation_with_a_message():
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp16", device="cpu", speech_tokenizer=False)
    tts.model.talker.codec_head.weight.data *= 1e6          # logits beyond fp16's 65504
    with pytest.raises(DeviceError) as e:
        tts.generate_custom_voice(["One.", "Two."], "ryan", max_frames=5, seed=1)
    assert str(e.value) == ("The model computed non-finite values (inf/NaN) in float16 for batch item(s) 1, 2: "
                            "float16 overflows with these weights. Load the model with dtype fp32 (or bf16 on "
                            "a GPU that has it) and run again.")


def test_an_overflow_in_one_codebook_of_one_item_names_that_item():
    """The overflow check keeps what it saw within a frame: inf in one item's logits for
    codebook 3 (code predictor head 2) on frame 1 stops generation although the later heads of
    that frame are finite again, and names that item only."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp16", device="cpu", speech_tokenizer=False)
    calls = []

    def overflow_on_frame_1(module, inputs, logits):
        calls.append(1)
        if len(calls) == 2:                       # head 2's call on frame 1 (frame 0 was the first)
            logits = logits.clone()
            logits[1] = float("inf")
            return logits

    tts.model.talker.code_predictor.lm_head[2].register_forward_hook(overflow_on_frame_1)
    with pytest.raises(generate.NonFinite, match=r"for batch item\(s\) 2: float16"):
        tts.generate_custom_voice(["One.", "Two.", "Three."], "ryan", max_frames=5, seed=1)


def test_a_frame_step_and_its_batch_are_made_on_the_device_asked_for():
    """Every buffer of a FrameStep (KV caches, masks, noise, counters, state), a collated batch
    and a loop's lengths are made on the model's device, never on the default one. On a CPU-only
    machine the 'meta' device stands in for a GPU: allocation works there, so a tensor made on
    the default device shows up as a CPU tensor."""
    from qwen_tts_core.generate import FrameLoop, FrameStep, collate, prefill
    from qwen_tts_core.prompt import TalkerPrompt
    from qwen_tts_core.sampling import Sampling

    talker = tiny_model("Tiny-CustomVoice", speech_tokenizer=False).model.talker
    meta = torch.device("meta")
    for static in (False, True):
        step = FrameStep(talker, 2, 64, Sampling(), Sampling(), torch.float32, meta, static=static)
        assert {name: t.device for name, t in step.buffers().items() if t.device != meta} == {}
        assert len(step.buffers()) > 20
    d = talker.cfg.hidden_size
    prompts = [TalkerPrompt(torch.zeros(n, d, device=meta), torch.zeros(m, d, device=meta)) for n, m in ((3, 4), (5, 1))]
    batch = collate(prompts, torch.zeros(d, device=meta))
    assert [t.device for t in (batch.embeds, batch.pads, batch.trailing, batch.pad)] == [meta] * 4
    assert step.length.device == meta and FrameLoop(step, batch, 4, [1, 2]).state is step
    # the prefill's positions and masks too (a talker moved to meta computes shapes only; a CPU
    # tensor among meta ones is an error)
    meta_talker = copy.deepcopy(talker).to(meta)
    hidden = prefill(meta_talker, batch, meta_talker.model.new_caches(2, 16, torch.float32, meta))
    assert hidden.device == meta and hidden.shape == (2, d)


def test_a_frame_loop_refuses_a_step_another_loop_holds():
    """A step serves one loop at a time (StepBuckets hands a second generation a fresh step; a
    loop made directly on a held step is refused, with the reason)."""
    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu", speech_tokenizer=False)
    _, reqs = requests_of("cv_batch")
    loop = tts.frame_loop(reqs, 3, greedy(tts), GREEDY_SUB, static=True)
    with pytest.raises(RuntimeError) as e:
        generate.FrameLoop(loop.state, loop.batch, 3, loop.item_keys)
    assert str(e.value) == "This frame step is in use by another generation that has not ended."


def test_the_step_kept_after_an_overflow_serves_the_next_generation():
    """An fp16 overflow stops a static generation with inf/NaN in its kept step's KV caches,
    and masked positions still poison attention (0 * inf = NaN): the caches are cleared, so the
    next generation of that shape runs in the same kept step and gives the codes that a freshly
    loaded model gives."""
    def load():
        return api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp16", device="cpu",
                                           speech_tokenizer=False)

    tts = load()
    blow_up = {"on": False}
    tts.model.talker.model.layers[0].mlp.register_forward_hook(lambda m, i, o: o * 1e6 if blow_up["on"] else o)

    def overflow_after_frame_3(index, frame):
        blow_up["on"] = index == 3

    with pytest.raises(generate.NonFinite):
        tts.generate_custom_voice("A first, somewhat longer sentence that the model says here.", "ryan",
                                  max_frames=20, seed=1, static=True, on_frame=overflow_after_frame_3)
    kept = list(tts.steps.steps.values())
    assert len(kept) == 1
    out = tts.generate_custom_voice("Short.", "ryan", max_frames=20, seed=1, static=True)
    assert list(tts.steps.steps.values()) == kept                # the same bucket, the same step
    fresh = load().generate_custom_voice("Short.", "ryan", max_frames=20, seed=1, static=True)
    assert len(out.codes[0]) > 0 and torch.equal(out.codes[0], fresh.codes[0])


def test_out_of_memory_while_generating_or_decoding(monkeypatch):
    from qwen_tts_core.errors import OutOfMemory

    tts = api.QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu")
    tts.generate_custom_voice("Kept.", "ryan", max_frames=3, static=True)
    assert tts.steps.steps

    def oom(index, frame):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    with pytest.raises(OutOfMemory) as e:
        tts.generate_custom_voice(["One.", "Two."], "ryan", max_frames=5, on_frame=oom)
    assert isinstance(e.value, torch.OutOfMemoryError)      # ComfyUI's own OOM handling still runs
    assert str(e.value) == ("Out of memory on cpu while generating a batch of 2. The generation's memory "
                            "was freed. Generate fewer lines at once, lower max_seconds, or free memory "
                            "(unload other models).")
    assert tts.steps.steps == {}                             # the kept steps went too
    monkeypatch.setattr(tts.codec.decoder, "forward", lambda *a, **k: oom(0, None))
    with pytest.raises(OutOfMemory, match=r"while decoding 1 clip\(s\) to audio; the decode's memory was "
                                          r"freed \(the codes are kept\)"):
        tts.decode([torch.zeros(4, 16, dtype=torch.long)])
