"""Errors with messages a user can act on. Every error the core raises on bad input is a
`QwenTTSError`, so callers (the ComfyUI nodes, the CLI) can show the message as it is."""
import torch


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (library errors often add pages of detail), or
    its type's name when the message is empty: for quoting an error inside one of ours."""
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


class QwenTTSError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ModelFolderError(QwenTTSError):
    """A model or tokenizer folder is missing, incomplete, corrupt or of another kind."""


class InputError(QwenTTSError, ValueError):
    """Bad text, audio, codes, speaker, language or setting."""


class OutsideInputError(InputError):
    """A path in a prompt that leads outside the folders a prompt may read (qwen_tts_core.paths)."""


class UnsupportedModeError(QwenTTSError):
    """The loaded model cannot do what was asked (e.g. voice design on a Base model)."""


class VoiceFileError(QwenTTSError):
    """A saved voice file that cannot be used."""


class DownloadError(QwenTTSError):
    """A checkpoint download that cannot go on (offline, server error, damaged file); the message
    says what was kept and how to continue or download by hand."""


class Interrupted(QwenTTSError):
    """Generation was stopped by the caller's interrupt check."""


class DeviceError(QwenTTSError):
    """The chosen device or precision cannot run the model: a device that does not exist or is
    busy, a dtype it cannot compute in, non-finite values from a too narrow dtype."""


class DeviceUnavailable(DeviceError, InputError):
    """A device that does not exist or is not usable here was chosen (bad input as much as a
    device problem: the message says which devices there are)."""


class OutOfMemory(DeviceError, torch.OutOfMemoryError):
    """Out of (GPU) memory, with what to do about it. Also a torch.OutOfMemoryError, so callers
    that free memory on out-of-memory (ComfyUI unloads its models) still do."""


# what CUDA (and its libraries) say when the device itself stopped answering, not the model
_DEVICE_LOST = ("CUDA error", "CUDA driver", "CUBLAS_STATUS", "CUDNN_STATUS", "cudaError", "NVML",
                "device-side assert")
_NOT_LOST = ("out of memory", "ALLOC_FAILED")     # CUDA's words for a full GPU: OutOfMemory's case


def device_lost(error: BaseException, device) -> "DeviceError | None":
    """A clear DeviceError for a GPU that failed during work (a driver reset, a GPU off the bus,
    an illegal access, a kernel's assert: CUDA's own errors), else None: other errors (a full
    GPU among them) keep their own message."""
    text = str(error)
    if not isinstance(error, RuntimeError) or not any(m in text for m in _DEVICE_LOST) \
            or any(m in text for m in _NOT_LOST):
        return None
    if "device-side assert" in text:
        cause = ("a GPU kernel stopped on an assertion (a bug: please report it with the console "
                 "log)")
    else:
        cause = "its driver may have reset or the GPU may have failed"
    return DeviceError(
        f"The device {device} stopped working ({first_line(error)}); {cause}. Nothing more can run on "
        "it in this process: save your work, restart ComfyUI (check the GPU with nvidia-smi first), or "
        "choose device cpu.")
