"""Fine-tuning: your recordings become a built-in speaker of a CustomVoice model.

    from qwen_tts_core.finetune import TrainConfig, codec_fingerprint, encode, reference_clip, scan, train

    data = scan("my_recordings/")                 # name.wav + name.txt, metadata.csv or .jsonl
    items = encode(data, codec, codec_fingerprint(base_folder))
    train(base_folder, items, reference_clip(data), "models/qwen-tts/my_voice",
          TrainConfig(speaker="my_voice", epochs=3, method="lora"), dataset_fingerprint=data.fingerprint())

Command line: python -m qwen_tts_core.finetune --help
"""
from .dataset import VoiceDataset, codec_fingerprint, encode, reference_clip, scan
from .memory import MemoryEstimate, Plan, estimate
from .objective import Item, Loss, batch_loss
from .trainer import Progress, TrainConfig, TrainingProgress, TrainResult, preflight, train

__all__ = ["scan", "encode", "codec_fingerprint", "reference_clip", "VoiceDataset", "Item", "Loss", "batch_loss",
           "TrainConfig", "TrainingProgress", "Progress", "TrainResult", "preflight", "train", "Plan",
           "MemoryEstimate", "estimate"]
