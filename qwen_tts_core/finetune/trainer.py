"""Fine-tuning a Base model into a CustomVoice model with one new speaker.

    data = scan("my_voice/")
    base = QwenTTS.from_pretrained("models/qwen-tts/Qwen3-TTS-12Hz-1.7B-Base")
    items = encode(data, base.codec, codec_fingerprint(base.folder))
    result = train(base.folder, items, reference_clip(data), "models/qwen-tts/my_voice",
                   TrainConfig(speaker="my_voice", epochs=3), dataset_fingerprint=data.fingerprint())

Training always works on its own copy of the base weights (a model loaded elsewhere is never
modified). Full fine-tuning trains every talker and code-predictor weight but the text embedding
table (311M of the 0.6B model's 906M parameters; `train_text_embedding` trains it too); LoRA
(`peft`, see lora.py) trains low-rank adapters and merges them into the weights when saving, so
the output is a plain checkpoint. Trained weights are fp32; on CUDA the forward pass runs under
bf16 autocast (and LoRA keeps the frozen base in bf16). After every epoch the folder is written
atomically with the training state; `resume` continues from the last finished epoch with the
same batches in the same order, so the loss curve is that of an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..api import QwenTTS
from ..device import resolve_device
from ..checkpoint import load_text_tokenizer, weight_files
from ..config import ModelConfig, read_json
from ..errors import InputError, Interrupted, OutOfMemory, UnsupportedModeError
from ..prompt import ChatTokenizer, Request
from . import lora, memory
from .output import (TrainingState, check_name, custom_voice_config, fingerprint, read_state, recover,
                         write_checkpoint)
from .objective import CODE_PREDICTOR_WEIGHT, Item, batch_loss

log = logging.getLogger("qwen_tts_core")

SPEAKER_ID = 3000             # the official recipe's id for the new speaker
METHODS = ("full", "lora")
OPTIMIZERS = ("adamw", "adamw8bit")
IF_EXISTS = ("stop", "resume", "overwrite")
# fields a resumed run must share with the run it continues (the rest may change, e.g. epochs)
_SAME_ON_RESUME = ("speaker", "method", "lora_rank", "lora_alpha", "optimizer", "train_text_embedding",
                   "speaker_id", "seed", "batch_size", "grad_accum")


@dataclass
class TrainConfig:
    speaker: str
    epochs: int = 3
    method: str = "full"                 # "full" or "lora"
    learning_rate: float | None = None   # None: 2e-5 (full, the official default) or 1e-4 (LoRA)
    batch_size: int = 1
    grad_accum: int = 1                  # micro-batches per optimizer step
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    code_predictor_weight: float = CODE_PREDICTOR_WEIGHT
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"             # "adamw8bit" needs bitsandbytes
    lora_rank: int = 16
    lora_alpha: float = 32.0
    train_text_embedding: bool = False
    precision: str = "auto"              # auto: bf16 autocast on CUDA, fp32 elsewhere; or "fp32"
    save_dtype: str = "auto"             # auto: the base checkpoint's dtype; or bf16 / fp16 / fp32
    speaker_id: int = SPEAKER_ID
    seed: int = 0

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 1e-4 if self.method == "lora" else 2e-5

    def check(self) -> "TrainConfig":
        check_name(self.speaker)
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} (use {' or '.join(METHODS)})")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} (use {' or '.join(OPTIMIZERS)})")
        if self.precision not in ("auto", "fp32"):
            problems.append(f"precision {self.precision!r} (use auto or fp32)")
        if self.save_dtype not in ("auto", "bf16", "fp16", "fp32"):
            problems.append(f"save_dtype {self.save_dtype!r} (use auto, bf16, fp16 or fp32)")
        for name, low in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("lora_rank", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                problems.append(f"{name} {getattr(self, name)!r} (a whole number >= {low})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"learning rate {self.lr!r} (must be > 0)")
        if problems:
            raise InputError("Invalid training settings: " + "; ".join(problems) + ".")
        return self


@dataclass
class TrainingProgress:
    epoch: int                # 1-based epoch being trained
    epochs: int
    step: int                 # optimizer steps done
    steps: int                # optimizer steps of the whole run
    loss: float               # mean loss of the last optimizer step
    seconds_left: float | None


Progress = TrainingProgress          # its earlier name


@dataclass
class TrainResult:
    folder: Path
    speaker: str
    epochs_done: int
    steps: int
    losses: list[float] = field(default_factory=list)
    files: dict = field(default_factory=dict)     # base files linked / copied into the output
    estimate: memory.MemoryEstimate | None = None


# ------------------------------------------------------------------------------------------ checks
def base_config(base: Path) -> tuple[ModelConfig, dict]:
    raw = read_json(Path(base) / "config.json")
    config = ModelConfig.from_dict(raw, str(Path(base) / "config.json"))
    if config.tts_model_type != "base":
        raise UnsupportedModeError(
            f"Fine-tuning starts from a Base model (e.g. Qwen3-TTS-12Hz-1.7B-Base or -0.6B-Base): it needs "
            f"the speaker encoder to make the new speaker's embedding. {Path(base).name} is a "
            f"{config.tts_model_type} model.")
    return config, raw


def check_speaker(config: ModelConfig, speaker: str, speaker_id: int) -> None:
    t = config.talker
    if speaker.strip().lower() in {s.lower() for s in t.spk_id}:
        raise InputError(f"The base model already has a speaker named {speaker!r}; choose another name.")
    used = {t.codec_eos_token_id, t.codec_pad_id, t.codec_bos_id, t.codec_think_id, t.codec_nothink_id,
            t.codec_think_bos_id, t.codec_think_eos_id, *t.codec_language_id.values(), *t.spk_id.values()}
    if not 2048 <= speaker_id < t.vocab_size or speaker_id in used:
        raise InputError(f"Speaker id {speaker_id} is not free in this model's codec vocabulary (audio codes "
                         f"are 0..2047, control ids {sorted(i for i in used if i >= 2048)}); use e.g. {SPEAKER_ID}.")


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def memory_needed(base: Path, items: list[Item], cfg: TrainConfig,
                  device: torch.device) -> tuple[memory.Plan, memory.MemoryEstimate]:
    """The memory estimate of a run (reads only config.json and the text tokenizer)."""
    chat = ChatTokenizer(load_text_tokenizer(Path(base)))          # the prompts' own tokenizer
    tokens = max(len(chat.text(it.text)) for it in items)
    plan = memory.Plan(cfg.method, cfg.batch_size, max(int(it.codes.shape[0]) for it in items), tokens,
                       cfg.gradient_checkpointing, cfg.optimizer, use_bf16(cfg, device), cfg.lora_rank,
                       cfg.train_text_embedding, device.type == "cpu")
    return plan, memory.estimate(base_config(Path(base))[0].talker, plan)


def _saved_dtype(base: Path, choice: str) -> torch.dtype:
    """The dtype the output is saved in: `choice`, or for auto that of the base weights."""
    names = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if choice != "auto":
        return names[choice]
    from safetensors import safe_open

    name = "talker.codec_head.weight"
    with safe_open(str(weight_files(base)[name]), framework="pt") as f:
        stored = f.get_slice(name).get_dtype()
    return {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}.get(stored, torch.bfloat16)


# ------------------------------------------------------------------------------------------ model
def trainable_parameters(talker, cfg: TrainConfig) -> dict[str, torch.nn.Parameter]:
    """Marks what is trained and returns it by name."""
    for name, p in talker.named_parameters():
        if cfg.method == "lora":
            p.requires_grad_("lora_" in name)
        else:
            p.requires_grad_(cfg.train_text_embedding or not name.startswith("model.text_embedding."))
    return {n: p for n, p in talker.named_parameters() if p.requires_grad}


def export_weights(talker, dtype: torch.dtype, speaker_id: int, xvector: torch.Tensor) -> dict[str, torch.Tensor]:
    """Talker tensors under their checkpoint names (`talker.` + module path), LoRA merged,
    the speaker's codec-embedding row set to its x-vector, cast to `dtype` (cpu)."""
    adapters = lora.layers(talker)
    out = {}
    with torch.no_grad():
        for name, t in talker.state_dict().items():
            if "lora_" in name:
                continue
            key = name.replace(".base_layer.", ".")
            module = key.rsplit(".", 1)[0]
            if module in adapters and key.endswith(".weight"):
                t = t + lora.delta(adapters[module])
            out["talker." + key] = t.detach().to("cpu", dtype)
        out["talker.model.codec_embedding.weight"][speaker_id] = xvector.to(dtype)
    return out


def _optimizer(params: list, cfg: TrainConfig):
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise InputError("8-bit AdamW needs the bitsandbytes package: pip install bitsandbytes, or choose "
                             "optimizer adamw.") from None
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def batches(n: int, cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """The micro-batches of an epoch: a shuffle fixed by (seed, epoch), so a resumed run sees
    exactly the batches an uninterrupted one would."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)).tolist()
    return [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]


# ------------------------------------------------------------------------------------------ train
def preflight(base: Path, out: Path, cfg: TrainConfig, if_exists: str = "stop") -> tuple[ModelConfig, dict]:
    """The checks that need no data and no weights (run before encoding a dataset):
    settings, names, a Base model, and what to do with an existing output folder."""
    cfg.check()
    check_name(Path(out).name, "output folder name")
    if if_exists not in IF_EXISTS:
        raise InputError(f"if_exists must be one of {', '.join(IF_EXISTS)} (got {if_exists!r}).")
    config, raw = base_config(base)
    check_speaker(config, cfg.speaker.strip(), cfg.speaker_id)
    recover(out)
    if out.exists():
        if out.resolve() == Path(base).resolve():
            raise InputError("The output folder is the base model's own folder; choose another name.")
        if if_exists == "stop":
            raise InputError(f"The output folder {out} already exists. Choose another name, resume its training, "
                             "or overwrite it (its last epoch is replaced only when the new run finishes one).")
        if if_exists == "resume":
            read_state(out)
    return config, raw


class Run:
    """One training run on its own copy of the base weights: what is trained, the optimizer,
    the x-vector and the progress (`state`), restored from `resume` when given."""

    def __init__(self, base: Path, cfg: TrainConfig, device: torch.device, reference, state: TrainingState,
                 resume: tuple | None = None):
        self.cfg, self.device, self.state = cfg, device, state
        self.bf16 = use_bf16(cfg, device)
        # LoRA on CUDA keeps the frozen base in bf16; everything else trains fp32 weights
        dtype = "bf16" if cfg.method == "lora" and self.bf16 else "fp32"
        self.tts = QwenTTS.from_pretrained(base, dtype=dtype, device=device, speech_tokenizer=False)
        self.xvector = (self.tts.speaker_embedding(*reference).clone() if resume is None
                        else resume[1]["xvector"]).to(device)
        self.tts.model.speaker_encoder = None                # not trained, not saved
        talker = self.talker = self.tts.model.talker
        if cfg.method == "lora":
            with torch.random.fork_rng(devices=[]):         # adapters start the same for the same seed
                torch.manual_seed(cfg.seed)
                lora.apply(talker, cfg.lora_rank, cfg.lora_alpha)
            talker.to(device)
        talker.model.checkpointing = talker.code_predictor.model.checkpointing = cfg.gradient_checkpointing
        self.params = trainable_parameters(talker, cfg)
        self.optimizer = _optimizer(list(self.params.values()), cfg)
        if resume is not None:
            old, tensors, optimizer_state = resume
            _load_trainable(self.params, tensors)
            self.optimizer.load_state_dict(optimizer_state)
            state.epochs_done, state.step, state.losses = old.epochs_done, old.step, list(old.losses)
        talker.train()

    def step(self, micro_batches: list[list[Item]], should_stop, stopped_message) -> float:
        """One optimizer step over the micro-batches (gradients averaged); -> their mean loss."""
        loss_sum = 0.0
        for batch in micro_batches:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = batch_loss(self.tts, batch, self.xvector, self.cfg.code_predictor_weight)
            (loss.total / len(micro_batches)).backward()
            loss_sum += float(loss.total.detach())
            if should_stop is not None and should_stop():
                raise Interrupted(stopped_message())
        torch.nn.utils.clip_grad_norm_(self.params.values(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.losses.append(loss_sum / len(micro_batches))
        return self.state.losses[-1]

    def save(self, out: Path, base: Path, config: dict, dtype: torch.dtype) -> dict:
        weights = export_weights(self.talker, dtype, self.cfg.speaker_id, self.xvector)
        trainable = {n: p.detach().float().cpu() for n, p in self.params.items()}
        trainable["xvector"] = self.xvector.float().cpu()
        return write_checkpoint(out, base, weights, config, self.state, trainable, self.optimizer.state_dict())


def train(base: str | Path, items: list[Item], reference: tuple[torch.Tensor, int], out: str | Path,
          cfg: TrainConfig, device: str | torch.device = "auto", if_exists: str = "stop",
          dataset_fingerprint: str = "", on_progress: Callable[[TrainingProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Trains `items` into a new speaker and writes `out` (a CustomVoice folder) after every
    epoch. `reference` = (waveform, sample rate) of the clip whose x-vector is the speaker.
    `if_exists`: what to do when `out` exists: stop (error), resume, or overwrite.
    `should_stop()` is asked after every micro-batch: True (or raising) stops training; the last
    finished epoch stays saved.
    Callable under torch.inference_mode (ComfyUI runs nodes in it): training leaves it, and
    works on copies of the items' codes made outside it (codes encoded in inference mode cannot
    be saved for backward)."""
    with torch.inference_mode(False), torch.enable_grad():
        items = [Item(it.text, it.codes.clone(), it.language) for it in items]
        return _train(Path(base), items, reference, Path(out), cfg, device, if_exists, dataset_fingerprint,
                      on_progress, should_stop)


def _train(base: Path, items: list[Item], reference: tuple[torch.Tensor, int], out: Path, cfg: TrainConfig,
           device, if_exists: str, dataset_fingerprint: str, on_progress, should_stop) -> TrainResult:
    _, raw_config = preflight(base, out, cfg, if_exists)
    if not items:
        raise InputError("Nothing to train on: the dataset has no clips.")
    dev = resolve_device(device)
    base_print = fingerprint(base / "config.json", *sorted(base.glob("*.safetensors")))
    resume = read_state(out) if out.exists() and if_exists == "resume" else None
    if resume is not None:
        _check_resume(resume[0], cfg, base_print, dataset_fingerprint, out)
    plan, est = memory_needed(base, items, cfg, dev)
    memory.check(est, plan, dev)                        # before loading anything
    speaker = cfg.speaker.strip().lower()               # names are looked up in lower case
    state = TrainingState(0, 0, [], asdict(cfg), base_print, dataset_fingerprint,
                          {"base": str(base), "speaker_id": cfg.speaker_id})
    run = Run(base, cfg, dev, reference, state, resume)
    for it in items:                                    # every language/transcript fits the model
        run.tts.check(Request(it.text, it.language))
    save_dtype = _saved_dtype(base, cfg.save_dtype)
    config = custom_voice_config(raw_config, speaker, cfg.speaker_id)

    total = math.ceil(math.ceil(len(items) / cfg.batch_size) / cfg.grad_accum) * cfg.epochs
    result = TrainResult(out, speaker, state.epochs_done, state.step, state.losses, estimate=est)
    log.info("Fine-tuning %s -> %s (%s, %d clips, %d epochs): memory %s", base.name, out, cfg.method,
             len(items), cfg.epochs, est.describe())
    started, steps_here = time.perf_counter(), 0
    for epoch in range(state.epochs_done, cfg.epochs):
        groups = [[items[i] for i in batch] for batch in batches(len(items), cfg, epoch)]
        out_of_memory = False
        for first in range(0, len(groups), cfg.grad_accum):
            try:
                loss = run.step(groups[first:first + cfg.grad_accum], should_stop, lambda: _stopped(out, state))
            except torch.OutOfMemoryError:
                out_of_memory = True        # raised below, once this frame no longer holds the step's tensors
                break
            steps_here += 1
            if on_progress is not None:
                left = (time.perf_counter() - started) / steps_here * (total - state.step)
                on_progress(TrainingProgress(epoch + 1, cfg.epochs, state.step, total, loss, left))
        if out_of_memory:
            run = groups = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(f"Out of memory on {dev} in step {state.step + 1}; the estimate before training was "
                              f"{est.describe()}. The training's memory was freed. {_stopped(out, state)} "
                              f"Try: {memory.smaller(plan)}; or free memory (close other programs, unload models).")
        state.epochs_done = epoch + 1
        result.files = run.save(out, base, config, save_dtype)
        log.info("Saved epoch %d/%d to %s (loss %.4f)", epoch + 1, cfg.epochs, out, state.losses[-1])
    result.epochs_done, result.steps = state.epochs_done, state.step
    return result


def _stopped(out: Path, state: TrainingState) -> str:
    if state.epochs_done:
        return (f"Training stopped. Epoch {state.epochs_done} is saved in {out}; resume to continue "
                "from there.")
    return "Training stopped before the first epoch finished; nothing was saved."


def _check_resume(old: TrainingState, cfg: TrainConfig, base_print: str, dataset_print: str, out: Path) -> None:
    now = asdict(cfg)
    changed = [k for k in _SAME_ON_RESUME if old.config.get(k) != now.get(k)]
    if changed:
        raise InputError(f"Cannot resume {out}: it was trained with other settings ("
                         + ", ".join(f"{k} {old.config.get(k)!r} -> {now.get(k)!r}" for k in changed)
                         + "). Use the same settings, or train into a new folder.")
    if old.base_fingerprint != base_print:
        raise InputError(f"Cannot resume {out}: it was trained from another base model; use the same base.")
    if dataset_print and old.dataset_fingerprint and old.dataset_fingerprint != dataset_print:
        raise InputError(f"Cannot resume {out}: the dataset changed since (clips or transcripts differ). "
                         "Resume with the same data, or train into a new folder.")
    if old.epochs_done >= cfg.epochs:
        log.info("%s already has %d epochs; nothing to train (raise epochs to continue).", out, old.epochs_done)


def _load_trainable(params: dict[str, torch.nn.Parameter], tensors: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise InputError(f"The saved training state lacks {len(missing)} trained tensors (first: {missing[:2]}); "
                         "it does not belong to these settings.")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])
