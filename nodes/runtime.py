"""The nodes' old single module for everything they need from ComfyUI, now split by concern:
`folders` (model and voice folders, downloads), `models` (devices, ComfyUI's model management,
the model handles) and `progress` (progress bars, interrupt). Its names stay importable from
here for code written against it; the pack itself imports the three modules."""
from .folders import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403  (QwenTTS and speech_codes too, as before)
from .models import load_model_handle as load_model, load_tokenizer_handle as load_tokenizer  # noqa: F401
from .progress import *  # noqa: F401,F403
from .types import seconds_to_frames  # noqa: F401
