"""qwen_tts_core: Qwen3-TTS in plain PyTorch (no ComfyUI imports), exact to the official model."""
from .errors import (DeviceError, DownloadError, InputError, Interrupted, ModelFolderError, OutOfMemory,
                     QwenTTSError, UnsupportedModeError, VoiceFileError)
from .api import GenerationResult, QwenTTS
from .prompt import Request, VoicePrompt
from .sampling import Sampling

__all__ = ["QwenTTS", "GenerationResult", "Request", "VoicePrompt", "Sampling", "QwenTTSError",
           "ModelFolderError", "InputError", "UnsupportedModeError", "VoiceFileError", "Interrupted",
           "DownloadError", "DeviceError", "OutOfMemory"]
