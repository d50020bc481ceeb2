"""The old name of `qwen_tts_core.finetune.output` (the fine-tuned checkpoint folder that
training writes), kept so that existing imports work: this module is that one."""
import sys

from . import output

sys.modules[__name__] = output
