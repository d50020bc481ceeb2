"""Where a model runs and in which precision: the one device and dtype policy, asked by the core
(`QwenTTS.from_pretrained`) and by the ComfyUI nodes (which pass ComfyUI's own choices in:
the load device it picked, the precision its flags ask for) alike.

    resolve_device("auto")          # cuda, else mps, else cpu; a named device is checked
    choose_dtype("auto", device)    # (torch.bfloat16, "bf16: native on this GPU (...)")
"""
from __future__ import annotations

import logging

import torch

from .errors import DeviceError, DeviceUnavailable, InputError, first_line

log = logging.getLogger("qwen_tts_core")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda, else mps, else cpu. A named device is checked: it must exist and take a
    tensor (a GPU held by another program in exclusive mode, or whose driver fails, does not)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return probe_device(torch.device("cuda"))
        if mps_available():
            return probe_device(torch.device("mps"))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceUnavailable(f"Unknown device {device!r} ({e}); use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceUnavailable(f"Device {device!r} was chosen but this machine has no usable CUDA GPU "
                                    "(no NVIDIA GPU, a CPU-only torch, or ComfyUI started with --cpu). "
                                    "Choose 'auto' or 'cpu'.")
        if dev.index is not None and dev.index >= count:
            raise DeviceUnavailable(f"Device {device!r} does not exist: this machine has {count} CUDA "
                                    f"GPU(s), cuda:0..cuda:{count - 1}. Choose one of those, or auto.")
    elif dev.type == "mps" and not mps_available():
        raise DeviceUnavailable(f"Device {device!r} was chosen but Apple Metal (MPS) is not available here. "
                                "Choose 'auto' or 'cpu'.")
    return probe_device(dev) if dev.type != "cpu" else dev


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def probe_device(device: torch.device) -> torch.device:
    """Puts one tiny tensor on `device`: a device that is busy (exclusive-process mode, taken by
    another program) or broken says so here, clearly, instead of in the middle of loading."""
    try:
        torch.ones(1, device=device).add_(1)
    except RuntimeError as e:
        raise DeviceError(f"Device {device} cannot be used right now ({first_line(e)}). It may be busy with "
                          "another program or its driver may have failed: close that program, or "
                          "choose another device (cpu works everywhere).") from None
    return device


SUPPORTED = (torch.bfloat16, torch.float16, torch.float32)
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


FP16_UNRELIABLE = ("GTX 1630", "GTX 1650", "GTX 1660")  # Turing without tensor cores: fp16 NaNs (as ComfyUI)


def bf16_emulated(device: torch.device) -> bool:
    """True on CUDA GPUs below compute capability 8.0 (before Ampere), which run bf16 only by
    emulation (slowly)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8


def auto_dtype(device: torch.device) -> tuple[torch.dtype, str]:
    """The precision "auto" picks for `device`, and why (the loader's info line says it).

    bf16 where the GPU computes it natively: CUDA compute capability >= 8.0 (Ampere and newer;
    `torch.cuda.is_bf16_supported()` also counts emulation on older GPUs, so it is not asked).
    fp16 on Volta/Turing GPUs (7.x) and Apple MPS, where it is native: the model's own
    arithmetic keeps norms, softmax and sampling in fp32, and every frame is checked for
    overflow, which stops generation with a message instead of garbage. fp32 elsewhere: the
    CPU (half precision is no faster there and the speech decoder ~60x slower), Pascal and
    older GPUs (slow half precision), GTX 16xx (unreliable fp16)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        gpu = f"{name}, compute capability {major}.{minor}"
        if not bf16_emulated(device):
            return torch.bfloat16, f"bf16: native on this GPU ({gpu})"
        if major == 7 and not any(n in name for n in FP16_UNRELIABLE):
            return torch.float16, f"fp16: this GPU ({gpu}) has no native bf16"
        return torch.float32, f"fp32: this GPU ({gpu}) has neither native bf16 nor reliable fast fp16"
    if device.type == "mps":
        return torch.float16, "fp16: native on Apple MPS (bf16 is not on every Mac)"
    return torch.float32, f"fp32: half precision is not faster on {device.type}"


def choose_dtype(dtype: str | torch.dtype, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) for a dtype name (auto, bf16, fp16, fp32) or torch dtype on `device`. An
    explicit half precision the device cannot compute in is refused with what to pick instead."""
    if isinstance(dtype, torch.dtype):
        chosen, why = dtype, "as given"
    elif dtype in DTYPES:
        chosen, why = DTYPES[dtype], "as chosen"
    elif dtype == "auto":
        return auto_dtype(device)
    else:
        raise InputError(f"Unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32.")
    if chosen not in SUPPORTED:
        raise InputError(f"dtype {chosen} is not supported; use auto, bf16, fp16 or fp32.")
    if chosen != torch.float32:
        check_dtype_runs(chosen, device)
    if chosen == torch.bfloat16 and bf16_emulated(device):
        why += "; bf16 is emulated on this GPU (slow): auto would pick fp16"
        log.warning("bf16 is emulated on %s (compute capability < 8.0) and runs slowly; dtype auto "
                    "picks fp16 there.", torch.cuda.get_device_name(device))
    return chosen, why


def offered_dtypes(device: torch.device) -> list[torch.dtype]:
    """The precisions a host application (ComfyUI) may pick from for this model on `device`:
    bf16, fp16, fp32; on Apple MPS fp16 and fp32 (bf16 is not on every Mac)."""
    return [torch.float16, torch.float32] if device.type == "mps" else list(SUPPORTED)


def adopt_dtype(suggested: torch.dtype | None, device: torch.device, host: str = "ComfyUI") -> tuple[torch.dtype, str]:
    """(dtype, why) for dtype "auto" inside a host application that suggests a precision (ComfyUI:
    its model_management.unet_dtype over `offered_dtypes`, so its --bf16-unet / --fp16-unet /
    --fp32-unet / --force-fp32 flags apply). Its choice, unless it has none (None), chose a
    precision this model has no kernels for (fp8, fp64), or bf16 on a GPU that only emulates it;
    then `auto_dtype`'s, saying why."""
    own, own_why = auto_dtype(device)
    if suggested is None:
        return own, f"{own_why} (this {host} has no dtype helper for it)"
    name = str(suggested).replace("torch.", "")
    if suggested not in SUPPORTED:
        return own, f"{own_why} ({host}'s choice {name} is not a precision this model runs in)"
    if suggested == torch.bfloat16 and bf16_emulated(device):
        return own, f"{own_why} ({host} chose bf16, which this GPU only emulates)"
    return suggested, f"{name}: {host}'s choice for {device} (its precision flags apply)"


def check_dtype_runs(dtype: torch.dtype, device: torch.device) -> None:
    """Runs the model's kinds of op (matmul, softmax attention, embedding lookup) once, tiny, in
    `dtype` on `device`: a device without that precision fails here with a clear message."""
    name = str(dtype).replace("torch.", "")
    try:
        x = torch.ones(1, 2, 4, 8, dtype=dtype, device=device)
        torch.nn.functional.scaled_dot_product_attention(x, x, x)
        (x[0, 0] @ x[0, 0].T).softmax(-1)
        torch.nn.functional.embedding(torch.zeros(1, dtype=torch.long, device=device), x[0, 0])
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"{device} cannot compute in {name} ({first_line(e)}). Choose dtype auto "
                          "(it picks what this device supports) or fp32.") from None


def decoder_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Precision of the speech decoder that runs on `device` for a model in `dtype`: fp32 on the
    CPU (its convolutions run ~60x slower in half precision there), else the model's."""
    return torch.float32 if torch.device(device).type == "cpu" else dtype
