"""Loaders: a Qwen3-TTS checkpoint folder, or the speech tokenizer alone."""
from __future__ import annotations

from comfy_api.latest import io

from . import folders, models
from .types import CATEGORY, DEVICES, DTYPES, Model, Tokenizer


_AUTO_DTYPE = ("auto: ComfyUI's choice for the device (its --bf16-unet / --fp16-unet / --fp32-unet "
               "/ --force-fp32 flags apply): bf16 on GPUs that compute it natively (RTX 30xx, A100 "
               "and newer), fp16 on older GPUs and Apple MPS, fp32 on CPU; the info output says "
               "what was chosen and why.")
_MODEL_DTYPE = (
    f"Weight precision. {_AUTO_DTYPE} The speech tokenizer's encoder is always fp32; its decoder "
    "takes this precision on a GPU and fp32 on the CPU (half precision is much slower there).")
_TOKENIZER_DTYPE = (f"Precision of the speech decoder on a GPU (fp32 on the CPU, where half precision "
                    f"is much slower). {_AUTO_DTYPE} The encoder is always fp32.")
_DOWNLOAD_TIP = (
    "Released checkpoints not on disk yet are listed as '<name> (download, size)': running with one "
    "downloads it from Hugging Face into models/qwen-tts/<name>/ (progress bar, Cancel keeps what "
    "arrived and the next run continues, every file's hash is checked), then loads it; afterwards it "
    "is listed under its plain name (press R). A plain name never downloads anything.")


def _device_inputs(dtype_tooltip: str) -> list[io.Input]:
    return [
        io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip=dtype_tooltip),
        io.Combo.Input("device", options=DEVICES, default="auto",
                       tooltip="Where to run. auto: ComfyUI's device (the GPU, or the CPU when "
                               "ComfyUI runs with --cpu). ComfyUI offloads the model when other "
                               "models need the memory."),
    ]


class QwenTTSModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSModelLoader",
            display_name="Qwen3-TTS Model Loader",
            category=CATEGORY,
            description="Loads a Qwen3-TTS checkpoint folder from models/qwen-tts/ (CustomVoice, "
                        "VoiceDesign or Base) with its speech tokenizer; a '(download)' entry first "
                        "downloads the released checkpoint from Hugging Face.",
            inputs=[
                io.Combo.Input("model_name", options=folders.model_choices("model"),
                               tooltip="A checkpoint folder under models/qwen-tts/ (also the "
                                       "qwen-tts paths of extra_model_paths.yaml), e.g. "
                                       "Qwen3-TTS-12Hz-1.7B-CustomVoice. " + _DOWNLOAD_TIP),
                *_device_inputs(_MODEL_DTYPE),
                # appended last: workflows map widget values by position; older ones get the default
                io.Boolean.Input("cuda_graphs", default=True, optional=True,
                                 tooltip="Fast path on NVIDIA GPUs: each generated frame is replayed "
                                         "as one captured CUDA graph (captured once per batch size and "
                                         "length bucket, then reused). In fp32 the codes are the same "
                                         "as without (checked on CPU with a stand-in for the graph; "
                                         "not yet measured on a GPU); off: the plain step (for "
                                         "debugging). No effect on CPU or Mac."),
            ],
            outputs=[
                Model.Output("model", display_name="model",
                             tooltip="The loaded model; connect it to the node of its kind "
                                     "(CustomVoice, VoiceDesign or Base)."),
                Tokenizer.Output("speech_tokenizer", display_name="speech_tokenizer",
                                 tooltip="The model's own speech tokenizer, for Encode/Decode."),
                io.String.Output("info", display_name="info",
                                 tooltip="Model type, size, precision (and why it was chosen), "
                                         "device, speakers and whether CUDA graphs are used."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        # A name missing from the list is reported at run time with download instructions; a
        # download entry downloads only when the node runs, never during validation.
        return True

    @classmethod
    def execute(cls, model_name, dtype, device, cuda_graphs=True) -> io.NodeOutput:
        handle = models.load_model_handle(model_name, dtype, device, cuda_graphs)
        return io.NodeOutput(handle, handle.tokenizer(), handle.describe())


class QwenTTSSpeechTokenizerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="QwenTTSSpeechTokenizerLoader",
            display_name="Qwen3-TTS Speech Tokenizer Loader",
            category=CATEGORY,
            description="Loads the Qwen3-TTS 12 Hz speech tokenizer (audio <-> codes): the standalone "
                        "Qwen3-TTS-Tokenizer-12Hz folder, or the one inside any model folder.",
            inputs=[
                io.Combo.Input("tokenizer_name", options=folders.model_choices("tokenizer"),
                               tooltip="Qwen3-TTS-Tokenizer-12Hz, or any Qwen3-TTS model folder "
                                       "(its speech_tokenizer/ subfolder is used). " + _DOWNLOAD_TIP),
                *_device_inputs(_TOKENIZER_DTYPE),
            ],
            outputs=[Tokenizer.Output("speech_tokenizer", display_name="speech_tokenizer",
                                      tooltip="The speech tokenizer, for Encode/Decode.")],
        )

    @classmethod
    def validate_inputs(cls, tokenizer_name):
        return True

    @classmethod
    def execute(cls, tokenizer_name, dtype, device) -> io.NodeOutput:
        return io.NodeOutput(models.load_tokenizer_handle(tokenizer_name, dtype, device))
