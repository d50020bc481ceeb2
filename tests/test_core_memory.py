"""The memory estimate (what ComfyUI is told to free before a generation) against the memory a
batch really takes: peak RSS on CPU while generating and decoding a batch of 3 with the
real-size speech decoder (random weights; it dominates the working memory) and a mid-size talker.
(A batch of 3 x 30 frames: the decoder then runs in 2 chunks of 20 frames.)
Runs in a fresh process, so that nothing earlier in the test session is counted."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.core

SCRIPT = r"""
import json, sys, threading, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import psutil, torch
torch.set_num_threads(2)
from conftest import MODELS
from qwen_tts_core.api import QwenTTS
from qwen_tts_core.checkpoint import load_text_tokenizer
from qwen_tts_core.codec.decoder import DecoderConfig, SpeechDecoder
from qwen_tts_core.codec.tokenizer import SpeechTokenizer, read_codec_config
from qwen_tts_core.config import GenerationDefaults, ModelConfig, read_json
from qwen_tts_core.prompt import Request
from qwen_tts_core.talker import Qwen3TTS

torch.manual_seed(0)
folder = MODELS / "Tiny-CustomVoice"
raw = read_json(folder / "config.json")
raw["talker_config"].update(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=64)
config = ModelConfig.from_dict(raw)
model = Qwen3TTS(config.talker, None).eval().requires_grad_(False)
# the released speech decoder's shape (Qwen3-TTS-Tokenizer-12Hz decoder_config)
real = DecoderConfig(codebook_dim=512, latent_dim=1024, hidden_size=512, num_attention_heads=16,
                     num_key_value_heads=16, head_dim=64, intermediate_size=1024, num_hidden_layers=8,
                     sliding_window=72, decoder_dim=1536)
decoder = SpeechDecoder(real).eval().requires_grad_(False)
codec_cfg = read_codec_config(folder / "speech_tokenizer")
codec = SpeechTokenizer(codec_cfg, None, decoder, torch.float32, "cpu")
tts = QwenTTS(folder, config, model, load_text_tokenizer(folder), GenerationDefaults(), codec)

texts = ["A first line of the batch.", "Second.", "A third line, somewhat longer than the others."]
frames = 30
proc = psutil.Process()
base = proc.memory_info().rss
peak, done = [base], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.005)
thread = threading.Thread(target=sample)
thread.start()
out = tts.generate_custom_voice(texts, "ryan", max_frames=frames, seed=1, decode=True)
done[0] = True
thread.join()
assert [c.shape[0] for c in out.codes] == [frames] * 3 and len(out.audio) == 3
longest = max(p.embeds.shape[0] for p in tts.build_prompts([Request(t, "auto", "ryan") for t in texts]))
print(json.dumps(dict(measured=peak[0] - base, estimate=tts.memory_estimate(3, frames, prompt_positions=longest),
                      chunk=codec.decode_chunk_frames(3), prompt=longest)))
"""


def test_memory_estimate_covers_a_batch_and_is_not_absurd():
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    ratio = r["estimate"] / r["measured"]
    print(f"batch of 3 x 30 frames (decoder chunk {r['chunk']} frames, prompt {r['prompt']} positions): "
          f"estimate {r['estimate'] / 2**20:.0f} MiB, measured peak RSS {r['measured'] / 2**20:.0f} MiB, "
          f"ratio {ratio:.2f}")
    assert r["measured"] <= r["estimate"] <= 2.5 * r["measured"]


def released_1_7b_on_meta():
    """A QwenTTS of the released 1.7B talker and code predictor shapes (config.json of
    Qwen/Qwen3-TTS-12Hz-1.7B-*) in bf16 on the meta device: arithmetic only, nothing allocated."""
    import torch
    from conftest import MODELS
    from qwen_tts_core.api import QwenTTS
    from qwen_tts_core.checkpoint import load_text_tokenizer
    from qwen_tts_core.config import GenerationDefaults, ModelConfig, read_json
    from qwen_tts_core.talker import Qwen3TTS

    folder = MODELS / "Tiny-CustomVoice"
    raw = read_json(folder / "config.json")
    raw["talker_config"].update(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                text_hidden_size=2048, max_position_embeddings=32768)
    raw["talker_config"]["code_predictor_config"].update(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=5, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128)
    config = ModelConfig.from_dict(raw)
    with torch.device("meta"):
        model = Qwen3TTS(config.talker, None).to(torch.bfloat16)
    return QwenTTS(folder, config, model, load_text_tokenizer(folder), GenerationDefaults())


@pytest.mark.parametrize("batch", [1, 16])
def test_memory_estimate_at_the_released_1_7b_shape(batch):
    """2048 frames after a 512-position prompt, bf16: the KV caches (28 layers x 8 kv heads x 128,
    keys and values) dominate; the rest (frame state, the prefill over the 512 prompt positions)
    is small. The prefill's attention scores used to be counted at the whole cache length
    (batch x heads x cache^2): 20 GiB of phantom at batch 16, which made ComfyUI unload other
    models for nothing."""
    import torch

    tts = released_1_7b_on_meta()
    for device, cache_len in (("cuda", 4096), ("cpu", 2560)):    # graphs keep a 4096 bucket
        estimate = tts.memory_estimate(batch, 2048, prompt_positions=512, device=torch.device(device),
                                       decode=False)
        kv = 2 * 28 * batch * 8 * cache_len * 128 * 2
        prefill_scores = batch * 16 * 512 * 512 * 4
        rest = estimate - kv
        print(f"1.7B bf16, batch {batch}, {device}: estimate {estimate / 2**30:.2f} GiB, of which KV caches "
              f"{kv / 2**30:.2f} GiB, the rest {rest / 2**20:.0f} MiB")
        assert prefill_scores < rest <= batch * 64 * 2**20         # at most 64 MiB an item besides the caches


@pytest.mark.parametrize("dtype,batch,prompt_len,cache_len", [(torch.float32, 1, 200, 256), (torch.bfloat16, 3, 250, 300),
                                                               (torch.float32, 2, 1, 4096)])
def test_step_estimate_is_the_size_of_the_step_it_sizes(dtype, batch, prompt_len, cache_len):
    """generate.step_bytes (what memory_estimate reserves for the KV caches and frame state) is,
    byte for byte, the size of the per-prompt buffers of the FrameStep it sizes (talker and code
    predictor caches, the noise row and its slot keys, the seen-codes and key masks, the hidden
    state, the text track and the codes buffer), plus two hidden states' worth (a step's new one
    before it is copied in, the frame's text entry) and the larger of the prefill's transient
    (over the prompt) and one frame's (over the whole cache, with the noise hash's temporaries). A
    wrong factor would have ComfyUI free too little memory."""
    from conftest import tiny_model
    from qwen_tts_core.generate import FrameStep, step_bytes
    from qwen_tts_core.sampling import Sampling

    talker = tiny_model("Tiny-CustomVoice", speech_tokenizer=False).model.talker
    step = FrameStep(talker, batch, cache_len, Sampling(), Sampling(), dtype, "cpu")

    def size(t):
        return t.numel() * t.element_size()

    caches = sum(size(getattr(c, kv)) for c in step.caches + step.sub_caches for kv in "kv")
    state = sum(size(t) for t in (step.noise_row, step.slots, step.seen, step.valid_keys, step.hidden,
                                  step.trailing, step.codes))
    assert step.noise_row.dtype == torch.float32 and step.hidden.dtype == step.trailing.dtype == dtype
    assert step.trailing.shape[1] == cache_len + 1 and step.codes.shape[1] == cache_len
    prefill = talker.model.forward_bytes(batch, prompt_len, dtype)
    hash_temporaries = 2 * batch * step.noise_row.shape[1] * 8          # int64, two alive at once
    frame = talker.model.forward_bytes(batch, 1, dtype, keys=cache_len) \
        + talker.code_predictor.model.forward_bytes(batch, 2, dtype, keys=talker.cfg.num_code_groups) \
        + hash_temporaries
    assert (frame > prefill) == (prompt_len == 1)        # the last case sizes the frame's transient
    # besides the buffers: a step's new hidden state before it is copied in, and the text entry
    assert step_bytes(talker, batch, prompt_len, cache_len, dtype) == \
        caches + state + 2 * size(step.hidden) + max(prefill, frame)
