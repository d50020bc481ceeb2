"""qwen_tts_core: Qwen3-TTS in plain PyTorch (no ComfyUI imports), exact to the official model."""
from .errors import (InputError, Interrupted, ModelFolderError, QwenTTSError,
                     UnsupportedModeError, VoiceFileError)

__all__ = ["QwenTTSError", "ModelFolderError", "InputError", "UnsupportedModeError",
           "VoiceFileError", "Interrupted"]
