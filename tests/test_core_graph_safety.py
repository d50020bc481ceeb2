"""The frame step can be captured as a CUDA graph, checked on a CPU: a capture fails on a
host-to-device copy, a host sync or a tensor made from Python data inside the step, and a
CPU test with a stand-in for the graph cannot see any of them (the first real GPU found
`self.seen[self.rows, code] = True` in `choose_code0`: a Python value written through
advanced indexing is a CPU tensor copied to the GPU). So the step runs here on the `meta`
device under a dispatch mode that records every such operation (`HostWorkGuard`)."""
import copy
from contextlib import contextmanager

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import tiny_model
from qwen_tts_core.generate import FrameStep, collate
from qwen_tts_core.prompt import TalkerPrompt
from qwen_tts_core.sampling import Sampling, choose, penalize_repeats

pytestmark = pytest.mark.core

META = torch.device("meta")
SYNCS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten.item",
         "aten.is_nonzero", "aten.equal")
FROM_PYTHON = ("aten.scalar_tensor", "aten.lift_fresh", "aten.lift_fresh_copy")


class HostWorkGuard(TorchDispatchMode):
    """Records, in `found`, each op that a CUDA graph capture refuses or that makes the host
    wait: a CPU tensor among its arguments or a copy to the CPU (host <-> device copies), a
    host sync (`.item()`, `nonzero`, boolean indexing, ...), a tensor made from a Python value
    (`scalar_tensor`, `lift_fresh`). The step's tensors are on `meta`, so a tensor that comes
    from the host shows up as a CPU one. torch.tensor/as_tensor with a device skip the dispatch
    mode, so `watch_factories` records those calls."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func).rsplit(".", 1)[0] if str(func).count(".") > 1 else str(func)
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        to_host = torch.device("cpu") in [(kwargs or {}).get("device")]
        if any(t.device.type == "cpu" for t in tensors) or to_host:
            self.found.append(f"host copy or host data: {func}")
        elif name in SYNCS or (name == "aten.index" and any(t.dtype == torch.bool for t in tensors[1:])):
            self.found.append(f"host sync: {func}")
        elif name in FROM_PYTHON:
            self.found.append(f"tensor from a Python value: {func}")
        if self.found:     # stop at the first: on `meta` a sync or a copy out has no value to give
            raise AssertionError(self.found[-1])
        return func(*args, **(kwargs or {}))

    @contextmanager
    def watch_factories(self):
        real = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}

        def recorded(name):
            def factory(*args, **kwargs):
                self.found.append(f"tensor from Python data: torch.{name}")
                raise AssertionError(self.found[-1])
            return factory

        for name in real:
            setattr(torch, name, recorded(name))
        try:
            yield self
        finally:
            for name, fn in real.items():
                setattr(torch, name, fn)


def meta_step(step_class=FrameStep, static=True, sampling=None, dtype=torch.float32, batch=2):
    """A FrameStep of the tiny model on `meta`, started on a batch of two prompts."""
    talker = copy.deepcopy(tiny_model("Tiny-CustomVoice", speech_tokenizer=False).model.talker).to(META, dtype)
    sampling = sampling or Sampling()
    step = step_class(talker, batch, 64, sampling, sampling, dtype, META, static=static)
    d = talker.cfg.hidden_size
    prompts = [TalkerPrompt(torch.zeros(n, d, device=META, dtype=dtype), torch.zeros(m, d, device=META, dtype=dtype))
               for n, m in ((3, 4), (5, 1))][:batch]
    with torch.inference_mode():
        step.start(collate(prompts, torch.zeros(d, device=META, dtype=dtype)),
                   torch.zeros(batch, dtype=torch.long, device=META))
    return step


def run_guarded(step, t=0) -> list[str]:
    guard = HostWorkGuard()
    with torch.inference_mode(), guard, guard.watch_factories():
        try:
            step.step(t)
        except AssertionError:
            pass
    return guard.found


@pytest.mark.parametrize("sampling", [
    Sampling(),                                              # sampled: the noise is hashed inside the step
    Sampling(do_sample=False, repetition_penalty=1.05),      # greedy with the penalty
    Sampling(temperature=0.7, top_k=5, top_p=0.8, repetition_penalty=1.3),   # every filter on
], ids=["sampled", "greedy", "filters"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16-overflow-check"])
def test_the_static_step_does_no_host_work(sampling, dtype):
    """Nothing in the static step copies from or to the host, waits for the device or makes a
    tensor from a Python value, whatever the sampling settings (and with fp16's overflow
    check). Checked to fail with `self.seen[self.rows, code] = True` put back into
    `FrameStep.choose_code0` (see the next test, which does that)."""
    step = meta_step(sampling=sampling, dtype=dtype)
    assert run_guarded(step) == []
    assert run_guarded(step, 1) == []


class StepWithTheOldLine(FrameStep):
    """choose_code0 as it was before the first GPU run: the capture failed here."""

    def choose_code0(self, hidden, frame):
        logits = self.check_finite(self.talker.codec_head(hidden).float())
        logits = penalize_repeats(logits, self.seen, self.sampling.repetition_penalty)
        code = choose(logits.masked_fill(self.suppress, float("-inf")), self.sampling, noise=self.noise)
        rows = torch.arange(code.shape[0], device=code.device)
        self.seen[rows, code] = True
        return code


def test_the_guard_finds_the_host_work_a_capture_refuses():
    """The guard itself: the line the first GPU run found, a torch.tensor made in the step, an
    `.item()` sync, and a buffer left on the CPU (a rotary table that did not move with the
    model) are each reported; the step as shipped is not."""
    assert run_guarded(meta_step()) == []
    assert run_guarded(meta_step(StepWithTheOldLine)) == [
        "tensor from a Python value: aten.scalar_tensor.default"]

    class MadeInStep(FrameStep):
        def choose_sub(self, logits, group):
            return choose(logits, self.sub_sampling, noise=self.sub_noise[group]) + torch.tensor(0, device=META)

    assert run_guarded(meta_step(MadeInStep)) == ["tensor from Python data: torch.tensor"]

    class Syncs(FrameStep):
        def choose_sub(self, logits, group):
            self.peak = logits.max().item()      # a value read on the host: the host waits
            return choose(logits, self.sub_sampling, noise=self.sub_noise[group])

    assert run_guarded(meta_step(Syncs)) == ["host sync: aten.item.default"]

    class Branches(FrameStep):
        def choose_sub(self, logits, group):
            if logits.sum() > 0:                 # a Python `if` on a device value
                pass
            return choose(logits, self.sub_sampling, noise=self.sub_noise[group])

    assert run_guarded(meta_step(Branches)) == ["host sync: aten.is_nonzero.default"]
    step = meta_step()
    rotary = step.talker.model.rotary
    rotary.cos, rotary.sin = torch.zeros(rotary.cos.shape), torch.zeros(rotary.sin.shape)
    assert run_guarded(step)[0].startswith("host copy or host data: aten.index.Tensor")


def test_the_dynamic_step_does_no_host_work_either():
    """The eager (dynamic) step reads the host's frame index for its shapes, which is fine
    eagerly, but it copies nothing and waits for nothing: Apple MPS and a shape whose capture
    failed run it."""
    step = meta_step(static=False)
    assert run_guarded(step, 0) == []
