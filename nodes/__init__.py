"""The ComfyUI nodes of the pack (imported by the pack's comfy_entrypoint, inside ComfyUI)."""
from . import folders
from .codec import QwenTTSDecodeCodes, QwenTTSEncodeAudio
from .generate import QwenTTSCustomVoice, QwenTTSVoiceClone, QwenTTSVoiceDesign
from .loader import QwenTTSModelLoader, QwenTTSSpeechTokenizerLoader
from .longform import NODES as LONGFORM_NODES
from .loudness import NODES as LOUDNESS_NODES
from .train import NODES as TRAIN_NODES
from .voices import QwenTTSLoadVoice, QwenTTSSaveVoice, QwenTTSVoiceFromAudio
from .watermark import NODES as WATERMARK_NODES, register_folder as register_watermark_folder

folders.register_folders()
register_watermark_folder()

# Node ids are stable: renaming one breaks every shared workflow that uses it.
NODES = [
    QwenTTSModelLoader, QwenTTSSpeechTokenizerLoader,
    QwenTTSCustomVoice, QwenTTSVoiceDesign,
    QwenTTSVoiceFromAudio, QwenTTSVoiceClone, QwenTTSSaveVoice, QwenTTSLoadVoice,
    QwenTTSEncodeAudio, QwenTTSDecodeCodes,
    *LONGFORM_NODES,
    *TRAIN_NODES,
    *LOUDNESS_NODES, *WATERMARK_NODES,
]
