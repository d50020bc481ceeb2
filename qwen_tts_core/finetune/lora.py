"""LoRA through `peft` (imported only when LoRA is asked for): low-rank adapters on every linear
layer and codec embedding of the talker and the code predictor (attention, MLP, output heads,
projections; not the text embedding table). Merged into the weights when a checkpoint is saved."""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import InputError

ADAPTER = "default"


def targets(talker: nn.Module) -> list[str]:
    """Names of the modules that get adapters."""
    return [name for name, m in talker.named_modules()
            if isinstance(m, (nn.Linear, nn.Embedding)) and "text_embedding" not in name]


def params_per_rank(talker: nn.Module) -> int:
    """Adapter values per unit of rank: (in + out) of each adapted module."""
    mods = dict(talker.named_modules())
    return sum(mods[n].in_features + mods[n].out_features if isinstance(mods[n], nn.Linear)
               else mods[n].num_embeddings + mods[n].embedding_dim for n in targets(talker))


def apply(talker: nn.Module, rank: int, alpha: float) -> None:
    """Adds the adapters in place (peft's own LoRA layers)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise InputError("LoRA training needs the peft package: pip install peft (with the python that "
                         "runs ComfyUI), or choose full fine-tuning.") from None
    # a regex matches whole module names (a list would also match name suffixes)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                        target_modules="|".join(map(re.escape, targets(talker))))
    inject_adapter_in_model(config, talker, adapter_name=ADAPTER)


def layers(talker: nn.Module) -> dict[str, nn.Module]:
    """The adapted modules by name (peft LoRA layers)."""
    return {name: m for name, m in talker.named_modules()
            if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")}


def delta(layer: nn.Module) -> torch.Tensor:
    """What merging adds to the base layer's weight."""
    return layer.get_delta_weight(ADAPTER)
