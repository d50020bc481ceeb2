"""How much memory fine-tuning needs, estimated before anything is loaded, so that a run that
cannot fit is refused with a clear message instead of dying mid-epoch.

    weights      all talker weights (fp32 for full fine-tuning; LoRA keeps the frozen base in the
                 compute precision) + LoRA adapters; bf16 autocast adds a bf16 copy of the
                 trained matrices
    gradients    fp32, one per trained parameter
    optimizer    AdamW: two fp32 moments per trained parameter (8-bit AdamW: two bytes)
    activations  what backward keeps: per token and layer ~6 D + 5 Dq + 4 Dkv + 4 I values
                 (measured on our layers with saved-tensor hooks), for the talker over
                 prompt + frames and for the code predictor over 16 positions per frame; with
                 gradient checkpointing only each layer's input plus one layer's worth; plus the
                 logits and their gradients
    loading      on the CPU, the moment of loading (the fp32 weights and the mapped bf16 file)
                 when that is the larger

Figures are estimates (see the README table); the GPU ones are unmeasured.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TalkerConfig, TransformerConfig
from ..errors import InputError

GIB = 2**30
HEADROOM = 1.10              # allocator fragmentation and temporaries
CUDA_CONTEXT = int(0.6 * GIB)


@dataclass
class Plan:
    """What a run trains and how (what the estimate depends on)."""
    method: str = "full"                 # "full" or "lora"
    batch_size: int = 1
    frames: int = 125                    # longest clip, in frames (12.5 per second)
    text_tokens: int = 48                # longest transcript, in tokens
    checkpointing: bool = False
    optimizer: str = "adamw"             # or "adamw8bit"
    bf16: bool = False                   # bf16 autocast (CUDA)
    lora_rank: int = 16
    train_text_embedding: bool = False
    on_cpu: bool = False                 # loading reads the bf16 file into RAM beside the weights


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int             # kept by autograd for backward
    temporaries: int = 0         # the logits and their gradients at the peak
    loading: int = 0             # while loading on the CPU: the weights plus the mapped bf16 file

    @property
    def total(self) -> int:
        training = self.weights + self.gradients + self.optimizer + self.activations + self.temporaries
        return int(max(training, self.loading) * HEADROOM)

    def describe(self) -> str:
        return (f"about {self.total / GIB:.1f} GiB (weights {self.weights / GIB:.1f}, gradients "
                f"{self.gradients / GIB:.1f}, optimizer {self.optimizer / GIB:.1f}, activations "
                f"{(self.activations + self.temporaries) / GIB:.1f} GiB, +{HEADROOM - 1:.0%} headroom)")


def parameter_counts(c: TalkerConfig) -> dict[str, int]:
    """Exact parameter counts of the talker (built on the meta device)."""
    from ..talker import Talker
    from .lora import params_per_rank

    with torch.device("meta"):
        talker = Talker(c)
    return {"total": sum(p.numel() for p in talker.parameters()),
            "text_embedding": talker.model.text_embedding.weight.numel(),
            "lora_per_rank": params_per_rank(talker),
            "matrices": sum(p.numel() for n, p in talker.named_parameters() if p.dim() == 2 and "embedding" not in n)}


def _per_token(c: TransformerConfig) -> int:
    """Values kept for backward per token and layer (fitted to our layers with saved-tensor hooks)."""
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    return 6 * c.hidden_size + 5 * q + 4 * kv + 4 * c.intermediate_size


def _stack(c: TransformerConfig, tokens: int, value_bytes: float, checkpointing: bool) -> float:
    layer = tokens * _per_token(c) * value_bytes
    if checkpointing:
        return c.num_hidden_layers * tokens * c.hidden_size * 4 + layer
    return c.num_hidden_layers * layer


def estimate(c: TalkerConfig, plan: Plan) -> MemoryEstimate:
    n = parameter_counts(c)
    if plan.method == "lora":
        trained = plan.lora_rank * n["lora_per_rank"]
        weights = n["total"] * (2 if plan.bf16 else 4) + trained * 4
    else:
        trained = n["total"] - (0 if plan.train_text_embedding else n["text_embedding"])
        weights = n["total"] * 4 + (n["matrices"] * 2 if plan.bf16 else 0)
    value_bytes = 2.5 if plan.bf16 else 4       # bf16 matmul outputs, fp32 norm internals
    b, frames = plan.batch_size, plan.frames
    tokens = b * (plan.text_tokens + 10 + frames)
    cp = c.code_predictor
    logits = b * frames * (cp.num_code_groups - 1) * cp.vocab_size + b * (frames + 1) * c.vocab_size
    activations = (_stack(c, tokens, value_bytes, plan.checkpointing)
                   + _stack(cp, b * frames * cp.num_code_groups, value_bytes, plan.checkpointing)
                   + tokens * (4 * c.text_hidden_size + 20 * c.hidden_size) * 4     # embeddings
                   + logits * 4)                                                    # log-softmax
    optimizer = trained * (2 if plan.optimizer == "adamw8bit" else 8)
    loading = weights + n["total"] * 2 if plan.on_cpu else 0
    return MemoryEstimate(int(weights), int(trained * 4), int(optimizer), int(activations), int(logits * 8),
                          int(loading))


def available(device: torch.device) -> int | None:
    """Free bytes where training will run (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            try:
                with open("/proc/meminfo") as f:
                    info = dict(line.split(":", 1) for line in f)
                return int(info["MemAvailable"].split()[0]) * 1024
            except (OSError, KeyError, ValueError):
                return None
    return None


def check(est: MemoryEstimate, plan: Plan, device: torch.device) -> None:
    """Refuses a run that will not fit, saying what would make it fit."""
    free = available(device)
    if free is None:
        return
    need = est.total + (CUDA_CONTEXT if device.type == "cuda" else 0)
    if need <= free:
        return
    raise InputError(f"Not enough memory: this training run needs {est.describe()} but only "
                     f"{free / GIB:.1f} GiB is free on {device}. Try: {smaller(plan)}.")


def smaller(plan: Plan) -> str:
    """What would make a run need less memory, most effective first."""
    tips = []
    if plan.batch_size > 1:
        tips.append("batch size 1 (use gradient accumulation to keep the effective batch)")
    if not plan.checkpointing:
        tips.append("gradient checkpointing")
    if plan.method != "lora":
        tips.append("LoRA instead of full fine-tuning")
    if plan.optimizer != "adamw8bit" and plan.method != "lora":
        tips.append("8-bit AdamW (pip install bitsandbytes)")
    tips.append(f"shorter clips (the longest is {plan.frames / 12.5:.0f} s)")
    return "; ".join(tips)


# ------------------------------------------------------------------------------------------ table
# talker shapes of the released Base checkpoints (config.json of Qwen/Qwen3-TTS-12Hz-*-Base)
RELEASED = {"0.6B": dict(hidden_size=1024, intermediate_size=3072),
            "1.7B": dict(hidden_size=2048, intermediate_size=6144)}
TABLE_PLANS = [
    ("full, AdamW", Plan("full")),
    ("full, AdamW, checkpointing", Plan("full", checkpointing=True)),
    ("full, 8-bit AdamW, checkpointing", Plan("full", checkpointing=True, optimizer="adamw8bit")),
    ("LoRA r16", Plan("lora")),
    ("LoRA r16, checkpointing", Plan("lora", checkpointing=True)),
    ("LoRA r16, batch 4, checkpointing", Plan("lora", batch_size=4, checkpointing=True)),
]
TABLE_GPUS = (8, 12, 16, 24)


def released_config(size: str) -> TalkerConfig:
    s = RELEASED[size]
    cp = TransformerConfig(1024, 3072, 5, 16, 8, 128, vocab_size=2048)
    return TalkerConfig(s["hidden_size"], s["intermediate_size"], 28, 16, 8, 128, vocab_size=3072,
                        text_hidden_size=2048, code_predictor=cp)


def table() -> str:
    """Markdown: estimated GPU memory per setting for the released sizes (bf16 autocast, one
    10 s clip of 48 text tokens per item)."""
    head = "| model | setting | estimate (GiB) | " + " | ".join(f"{g} GB" for g in TABLE_GPUS) + " |"
    rows = [head, "|" + "---|" * (3 + len(TABLE_GPUS))]
    for size in RELEASED:
        c = released_config(size)
        for label, plan in TABLE_PLANS:
            plan = Plan(**{**plan.__dict__, "bf16": True})
            need = estimate(c, plan).total + CUDA_CONTEXT
            fits = ["fits" if need <= g * 1e9 * 0.95 else "-" for g in TABLE_GPUS]
            rows.append(f"| {size} | {label} | {need / GIB:.1f} | " + " | ".join(fits) + " |")
    return "\n".join(rows)
