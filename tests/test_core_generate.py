"""The generation loop (qwen_tts_core.generate) on the fixture model with its codebook-0 logits
steered by a hook, so that end-of-speech comes exactly where a test wants it: an item's first
end-of-speech is where it ends (a later one changes nothing), end-of-speech is never taken before
the second frame, and the loop stops as soon as every item has ended. Also how prompts of
different lengths are batched (`collate`)."""
import pytest
import torch

from conftest import tiny_model
from qwen_tts_core.generate import MIN_FRAMES
from qwen_tts_core.prompt import Request
from qwen_tts_core.sampling import Sampling

pytestmark = pytest.mark.core

GREEDY = dict(sampling=Sampling(do_sample=False), sub_sampling=Sampling(do_sample=False))


def steered(tts, plan: dict[int, dict[int, float]]):
    """A forward hook on the talker's codec head: at its k-th call (call k chooses codebook 0 of
    frame k; call 0 is the prefill), add plan[k][row] to row's end-of-speech logit (+1e4: certain,
    -1e4: never). Returns the hook handle and the list of calls seen."""
    eos = tts.config.talker.codec_eos_token_id
    calls = []

    def hook(module, inputs, logits):
        k = len(calls)
        calls.append(k)
        if k in plan:
            logits = logits.clone()
            for row, push in plan[k].items():
                logits[row, eos] += push
            return logits

    return tts.model.talker.codec_head.register_forward_hook(hook), calls


def run_steered(tts, plan, n=2, max_frames=12, **options):
    handle, calls = steered(tts, plan)
    frames = []
    try:
        out = tts.generate([Request(f"Item number {i}.", "english", "vivian") for i in range(n)],
                           max_frames=max_frames, on_frame=lambda i, f: frames.append(i), **GREEDY, **options)
    finally:
        handle.remove()
    return out, frames


def never_before(frame: int, rows=(0, 1)) -> dict:
    """Bans end-of-speech for `rows` on every frame before `frame`."""
    return {k: {r: -1e4 for r in rows} for k in range(frame)}


@pytest.mark.parametrize("static", [False, True])
def test_the_first_end_of_speech_of_an_item_wins(static):
    """Item 0 chooses end-of-speech at frame 3 and again at frame 6 (it keeps being generated
    while item 1 speaks on); it must end at frame 3, item 1 at frame 8."""
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    plan = never_before(8)
    plan[3] = {0: 1e4, 1: -1e4}
    plan[6] = {0: 1e4, 1: -1e4}
    plan[8] = {1: 1e4}
    out, frames = run_steered(tts, plan, static=static)
    assert [c.shape[0] for c in out.codes] == [3, 8] and out.stopped == [True, True]
    assert frames == list(range(8))                     # the loop ends when the last item has ended
    single, _ = run_steered(tts, {**never_before(3, rows=(0,)), 3: {0: 1e4}}, n=1, static=static)
    assert torch.equal(out.codes[0], single.codes[0][:3])


def test_end_of_speech_is_never_taken_before_the_second_frame():
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    out, frames = run_steered(tts, {k: {0: 1e4} for k in range(6)}, n=1)
    assert MIN_FRAMES == 2 and out.codes[0].shape[0] == MIN_FRAMES and out.stopped == [True]
    assert frames == [0, 1]


def test_an_item_without_end_of_speech_runs_to_the_frame_limit():
    tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    out, frames = run_steered(tts, {**never_before(7), 2: {0: 1e4, 1: -1e4}}, max_frames=7)
    assert [c.shape[0] for c in out.codes] == [2, 7] and out.stopped == [True, False]
    assert frames == list(range(7))


def test_only_the_control_ids_but_end_of_speech_are_never_chosen():
    """suppressed_ids: the top 1024 ids of the codec vocabulary (think/language/speaker tags,
    pad, bos) are never sampled as audio; end-of-speech, one of them, is; every audio code is."""
    from qwen_tts_core.generate import suppressed_ids

    c = tiny_model("Tiny-CustomVoice", speech_tokenizer=False).config.talker
    mask = suppressed_ids(c)
    assert mask.dtype == torch.bool and mask.shape == (c.vocab_size,)
    controls = set(range(c.vocab_size - 1024, c.vocab_size)) - {c.codec_eos_token_id}
    assert set(mask.nonzero().flatten().tolist()) == controls
    assert c.vocab_size - 1024 == 2048 and c.codec_eos_token_id in range(2048, c.vocab_size)


def test_collate_left_pads_the_prompts_and_fills_the_text_tracks_with_tts_pad():
    """A batch of prompts of different lengths: each prompt right-aligned after zero rows (its
    pad count in `pads`), each text track at the start of its row and tts_pad after it, as long as
    the longest track (here longer than the model width, which an index mix-up would not notice
    with short tracks)."""
    from qwen_tts_core.generate import collate
    from qwen_tts_core.prompt import TalkerPrompt

    d = 8
    g = torch.Generator().manual_seed(0)
    a = TalkerPrompt(torch.randn(3, d, generator=g), torch.randn(40, d, generator=g))
    b = TalkerPrompt(torch.randn(5, d, generator=g), torch.randn(2, d, generator=g))
    pad = torch.randn(1, 1, d, generator=g)
    batch = collate([a, b], pad)
    assert batch.pads.tolist() == [2, 0] and batch.embeds.shape == (2, 5, d)
    assert torch.equal(batch.embeds[0, 2:], a.embeds) and not batch.embeds[0, :2].any()
    assert torch.equal(batch.embeds[1], b.embeds)
    assert batch.trailing.shape == (2, 40, d) and torch.equal(batch.trailing[0], a.trailing)
    assert torch.equal(batch.trailing[1, :2], b.trailing)
    assert torch.equal(batch.trailing[1, 2:], pad.reshape(1, d).expand(38, d))
    assert torch.equal(batch.pad, pad.reshape(d))
