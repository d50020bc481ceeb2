"""The fine-tuning objective on a fixed batch, against three independent computations:
  * the official model modules with the labels aligned as generation uses them (golden values
    from tools/oracle/finetune_loss.py, which runs the official package),
  * our own generation loop, teacher-forced (prefill + KV cache + code predictor, as
    generate.FrameStep runs them), with the cross-entropy of each chosen code,
  * the official recipe's (wrong) value, reproduced exactly by a replica of its alignment
    (labels two positions ahead; code predictor fed the frame's own position, its labels shifted
    once more), which shows what it trains."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import AUDIO, GOLDEN, tiny_model
from qwen_tts_core.finetune.objective import Item, Loss, batch_loss, code_predictor_logits, item_inputs
from qwen_tts_core.layers import causal_mask
from qwen_tts_core.prompt import Request, VoicePrompt

pytestmark = [pytest.mark.core, pytest.mark.usefixtures("one_thread")]
TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "finetune_loss.json").read_text())


@pytest.fixture(scope="module")
def batch(golden):
    tts = tiny_model("Tiny-Base", speech_tokenizer=False)
    items = [Item(it["text"], torch.tensor(it["codes"])) for it in golden["items"]]
    return tts, items, torch.tensor(golden["xvector"])


def test_loss_equals_official_modules_with_aligned_labels(batch, golden):
    tts, items, xvec = batch
    with torch.no_grad():
        loss = batch_loss(tts, items, xvec, golden["code_predictor_weight"])
    want = golden["official_modules_aligned"]
    assert abs(float(loss.talker) - want["talker"]) < TOL
    assert abs(float(loss.code_predictor) - want["code_predictor"]) < TOL
    assert abs(float(loss.total) - want["loss"]) < TOL


def teacher_forced(tts, item, xvec):
    """Sum of -log p(true code) and the number of codes (talker; code predictor) through the
    generation path: prompt prefill, then one frame at a time with the KV cache."""
    talker = tts.model.talker
    prompt = tts.build_prompts([Request(item.text, "auto", voice=VoicePrompt(xvec))])[0]
    p = prompt.embeds.shape[0]
    n = item.codes.shape[0]
    caches = talker.model.new_caches(1, p + n + 1, torch.float32, "cpu")
    sub_caches = talker.code_predictor.model.new_caches(1, 16, torch.float32, "cpu")
    hidden = talker.model(prompt.embeds[None], torch.arange(p)[None], causal_mask(p, p, "cpu"), caches, 0)[:, -1]
    pad = talker.embed_text(torch.tensor([tts.config.tts_pad_token_id]))
    nll_talker = nll_cp = 0.0
    for f in range(n + 1):
        label = item.codes[f, 0] if f < n else torch.tensor(talker.cfg.codec_eos_token_id)
        nll_talker -= float(F.log_softmax(talker.codec_head(hidden)[0], -1)[label])
        if f == n:
            break
        frame = item.codes[f]

        def choose(logits, g):
            nonlocal nll_cp
            nll_cp -= float(F.log_softmax(logits[0], -1)[frame[g + 1]])
            return frame[g + 1][None]

        talker.code_predictor.predict(hidden, talker.embed_codes(frame[:1]), choose, sub_caches)
        text = prompt.trailing[f] if f < prompt.trailing.shape[0] else pad[0]
        x = (talker.embed_frame(frame[None]) + text)[:, None]
        hidden = talker.model(x, torch.tensor([[p + f]]), None, caches, p + f)[:, -1]
    return nll_talker, n + 1, nll_cp, n * 15


def test_loss_equals_teacher_forced_generation(batch, golden):
    tts, items, xvec = batch
    sums = [0.0, 0, 0.0, 0]
    with torch.inference_mode():
        for item in items:
            for i, v in enumerate(teacher_forced(tts, item, xvec)):
                sums[i] += v
        loss = batch_loss(tts, items, xvec, 0.3)
        one = batch_loss(tts, items[1:], xvec, 0.3)
    assert abs(float(loss.talker) - sums[0] / sums[1]) < TOL
    assert abs(float(loss.code_predictor) - sums[2] / sums[3]) < TOL
    # a batch's padding changes nothing for the shorter item
    t, nt, c, nc = teacher_forced(tts, items[1], xvec)
    assert abs(float(one.talker) - t / nt) < TOL and abs(float(one.code_predictor) - c / nc) < TOL


def recipe_replica(tts, items, xvec, weight=0.3):
    """The official recipe's alignment on our modules (same signature and result as
    objective.batch_loss): the talker's position j is scored against the label at j + 2; the
    code predictor gets the hidden state at the frame's own position and head k is scored
    against codebook k + 2 (head 15 never)."""
    talker = tts.model.talker
    talker_nll, talker_n, cp_nll, cp_n = 0.0, 0, 0.0, 0
    for item in items:
        x, p = item_inputs(tts, item, xvec)
        h = talker.model(x[None], torch.arange(x.shape[0])[None], causal_mask(x.shape[0], x.shape[0], "cpu"))[0]
        n = item.codes.shape[0]
        labels = torch.cat([item.codes[:, 0], torch.tensor([talker.cfg.codec_eos_token_id])])
        logits = talker.codec_head(h[p - 2:p + n - 1])                    # position j predicts j + 2
        talker_nll = talker_nll + F.cross_entropy(logits, labels, reduction="sum")
        talker_n += n + 1
        cp = code_predictor_logits(talker, h[p:p + n], item.codes)        # the frame's own position
        cp_nll = cp_nll + F.cross_entropy(cp[:, :14].flatten(0, 1), item.codes[:, 2:].flatten(), reduction="sum")
        cp_n += n * 14
    return Loss(talker_nll / talker_n + weight * cp_nll / cp_n, talker_nll / talker_n, cp_nll / cp_n)


def test_official_recipe_value_is_its_misalignment(batch, golden):
    tts, items, xvec = batch
    with torch.no_grad():
        replica = recipe_replica(tts, items, xvec, golden["code_predictor_weight"])
        ours = batch_loss(tts, items, xvec, golden["code_predictor_weight"])
    recipe = golden["official_recipe_with_text_projection"]
    assert abs(float(replica.talker) - recipe["talker"]) < TOL
    assert abs(float(replica.code_predictor) - recipe["code_predictor"]) < TOL
    assert abs(float(replica.total) - recipe["loss"]) < TOL
    assert abs(float(ours.total) - recipe["loss"]) > 0.1        # and it is not what we train
    # the recipe as it is cannot even run on this checkpoint (text embeddings not projected)
    assert "must match the size of tensor b (32)" in golden["official_recipe_as_is"]["error"]


def test_our_xvector_is_the_official_one(golden):
    from qwen_tts_core.audio import read_wav

    tts = tiny_model("Tiny-Base", speech_tokenizer=False)
    wav, sr = read_wav(AUDIO / "ref_en.wav")
    assert (tts.speaker_embedding(wav, sr) - torch.tensor(golden["xvector"])).abs().max() < 1e-4
