"""Regenerates tests/fixtures/golden/finetune_loss.json: on one fixed batch (Tiny-Base, two
utterances), the loss of the official fine-tuning recipe (QwenLM/Qwen3-TTS `finetuning/`, which
is not in the PyPI package) next to the loss the official model modules give with the labels
aligned the way generation uses them. tests/test_finetune_objective.py compares our objective
with both.

    git clone https://github.com/QwenLM/Qwen3-TTS /tmp/Qwen3-TTS      (or the fetch tool)
    PYTHONPATH=.venv/transformers-4.57 .venv/bin/python tools/oracle/finetune_loss.py \\
        --recipe /tmp/Qwen3-TTS/finetuning --commit 022e286

Their code is run from that folder, never copied here. To run it on the CPU the script
  * writes the batch as the recipe's JSONL (with `audio_codes`, as prepare_data.py writes it),
  * replaces the recipe's `Accelerator` by a stand-in whose `backward(loss)` records the loss and
    stops before any optimizer step, and loads the model in fp32 without flash-attention,
  * runs the recipe as it is (which crashes on Tiny-Base: its text embeddings skip
    `text_projection`, and Tiny-Base's text width differs from the talker's, as in the released
    0.6B), then once more with `text_projection` put back in front of the talker (the smallest
    change that lets it run), recording the loss it hands to backward.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
import official_oracle as oracle  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "models" / "qwen-tts" / "Tiny-Base"
REF_AUDIO = "tests/fixtures/audio/ref_en.wav"
OUT = ROOT / "tests" / "fixtures" / "golden" / "finetune_loss.json"
TEXTS = ["Hello there, this is the first training sentence.", "A second, shorter one."]
FRAMES = [13, 9]
SUB_WEIGHT = 0.3


def fixed_batch() -> list[dict]:
    g = torch.Generator().manual_seed(2026)
    return [{"text": t, "codes": torch.randint(0, 2048, (n, 16), generator=g).tolist()}
            for t, n in zip(TEXTS, FRAMES)]


class Caught(Exception):
    def __init__(self, loss):
        self.loss = loss


class StandInAccelerator:
    """What the recipe calls on accelerate's Accelerator, on one CPU process."""
    sync_gradients = True
    is_main_process = True

    def __init__(self, *args, **kwargs):
        pass

    def prepare(self, *objects):
        return objects

    @contextlib.contextmanager
    def accumulate(self, model):
        yield

    def backward(self, loss):
        raise Caught(loss.detach())

    def print(self, *args, **kwargs):
        pass


class Projected(torch.nn.Module):
    """text_embedding followed by text_projection (what the recipe leaves out)."""

    def __init__(self, embedding, projection):
        super().__init__()
        self.embedding, self.projection = embedding, projection

    def forward(self, ids):
        return self.projection(self.embedding(ids))


def run_recipe(recipe: Path, jsonl: Path, project_text: bool) -> dict:
    sys.path.insert(0, str(recipe))
    import sft_12hz

    real, real_accelerator = sft_12hz.Qwen3TTSModel, sft_12hz.Accelerator
    record = {}

    class Fp32Model:
        @staticmethod
        def from_pretrained(path, **kwargs):
            tts = real.from_pretrained(path, dtype=torch.float32)     # not bf16 + flash-attention
            talker = tts.model.talker
            if project_text:
                talker.model.text_embedding = Projected(talker.model.text_embedding, talker.text_projection)
            def on_talker(module, args, out):       # a hook returning a value would replace the output
                record.setdefault("talker", float(out.loss))

            def on_speaker(module, args, out):
                record.setdefault("xvector", out[0].detach().float().tolist())

            talker.register_forward_hook(on_talker)
            tts.model.speaker_encoder.register_forward_hook(on_speaker)
            sub = talker.forward_sub_talker_finetune

            def logged_sub(*a, **k):
                logits, loss = sub(*a, **k)
                record["code_predictor"] = float(loss)
                return logits, loss

            talker.forward_sub_talker_finetune = logged_sub
            return tts

    sft_12hz.Accelerator, sft_12hz.Qwen3TTSModel = StandInAccelerator, Fp32Model
    sys.argv = ["sft_12hz.py", "--init_model_path", str(MODEL), "--train_jsonl", str(jsonl),
                "--batch_size", str(len(TEXTS)), "--num_epochs", "1", "--output_model_path", str(jsonl.parent / "out")]
    torch.manual_seed(0)
    try:
        sft_12hz.train()
    except Caught as c:
        record["loss"] = float(c.loss)
        return record
    except Exception as e:                 # the recipe as it is crashes on this checkpoint
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    finally:
        sft_12hz.Accelerator, sft_12hz.Qwen3TTSModel = real_accelerator, real
        sys.path.remove(str(recipe))
    raise RuntimeError("the recipe finished without calling backward")


def aligned_with_official_modules(recipe: Path, jsonl: Path) -> dict:
    """The official modules on the recipe's own batch layout (its dataset.py collate), with the
    labels aligned as generation uses them: the talker's hidden state at p-1 predicts codebook 0
    at p, and the code predictor starts from that same hidden state; head k predicts codebook k+1."""
    sys.path.insert(0, str(recipe))
    from dataset import TTSDataset
    from qwen_tts import Qwen3TTSModel
    from transformers import AutoConfig

    tts = Qwen3TTSModel.from_pretrained(str(MODEL), dtype=torch.float32)
    model, talker = tts.model, tts.model.talker
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    data = TTSDataset(rows, tts.processor, AutoConfig.from_pretrained(str(MODEL)))
    b = data.collate_fn([data[i] for i in range(len(rows))])
    with torch.no_grad():
        xvec = model.speaker_encoder(b["ref_mels"].float())
        text = talker.text_projection(talker.model.text_embedding(b["input_ids"][:, :, 0])) * b["text_embedding_mask"]
        codec = talker.model.codec_embedding(b["input_ids"][:, :, 1]) * b["codec_embedding_mask"]
        codec[:, 6, :] = xvec
        x = text + codec
        for i in range(1, 16):
            x = x + talker.code_predictor.get_input_embeddings()[i - 1](b["codec_ids"][:, :, i]) * b["codec_mask"][..., None]
        out = talker(inputs_embeds=x, attention_mask=b["attention_mask"], output_hidden_states=True)
        labels = b["codec_0_labels"]
        talker_ce = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        hidden = out.hidden_states[0][-1][:, :-1][b["codec_mask"][:, 1:]]          # h[p-1] of each frame
        codes = b["codec_ids"][b["codec_mask"]]
        emb = [hidden[:, None], talker.get_input_embeddings()(codes[:, :1])]
        emb += [talker.code_predictor.get_input_embeddings()[i - 1](codes[:, i:i + 1]) for i in range(1, 15)]
        logits = talker.code_predictor.forward_finetune(inputs_embeds=torch.cat(emb, 1)).logits
        cp_ce = F.cross_entropy(logits.flatten(0, 1).float(), codes[:, 1:].flatten())
    sys.path.remove(str(recipe))
    return {"loss": float(talker_ce + SUB_WEIGHT * cp_ce), "talker": float(talker_ce),
            "code_predictor": float(cp_ce), "xvector": xvec[0].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", required=True, type=Path, help="the finetuning/ folder of a QwenLM/Qwen3-TTS copy")
    ap.add_argument("--commit", default="", help="the commit of that copy (recorded in the JSON)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qwen_tts_finetune_oracle"))
    args = ap.parse_args()
    oracle.stub_unused_imports()
    import qwen_tts
    import transformers

    batch = fixed_batch()
    args.work.mkdir(parents=True, exist_ok=True)
    jsonl = args.work / "train_with_codes.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for item in batch:
            f.write(json.dumps({"audio": str(ROOT / REF_AUDIO), "text": item["text"], "ref_audio": str(ROOT / REF_AUDIO),
                                "audio_codes": item["codes"]}, ensure_ascii=False) + "\n")
    as_is = run_recipe(args.recipe.resolve(), jsonl, project_text=False)
    projected = run_recipe(args.recipe.resolve(), jsonl, project_text=True)
    aligned = aligned_with_official_modules(args.recipe.resolve(), jsonl)
    result = {
        "what": "loss on a fixed batch: the official recipe vs the official modules with aligned labels",
        "recipe_commit": args.commit, "qwen_tts": getattr(qwen_tts, "__version__", "0.1.1"),
        "transformers": transformers.__version__, "torch": torch.__version__,
        "model": "Tiny-Base", "ref_audio": REF_AUDIO, "code_predictor_weight": SUB_WEIGHT, "items": batch,
        "xvector": aligned.pop("xvector"),
        "official_recipe_as_is": as_is,
        "official_recipe_with_text_projection": {k: projected[k] for k in ("loss", "talker", "code_predictor")},
        "official_modules_aligned": aligned,
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("items", "xvector")}, indent=1))


if __name__ == "__main__":
    main()
