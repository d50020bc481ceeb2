"""Shared workflows keep opening and running. Every node id and input that example_workflows/ or
a workflow saved with an earlier release (tests/fixtures/workflows/<version>/: UI format, and the
API prompts made from it; never edited) uses still exists in the pack's schemas, or reaches its
new name through nodes/replacements.py (ComfyUI's node replacement). The widget values a saved UI
workflow holds by position still land on the inputs they were saved for, a saved API prompt
still has every required input, and its values pass the nodes' checks."""
import importlib
import json
from pathlib import Path

import pytest

import comfy_env

SAVED = comfy_env.ROOT / "tests" / "fixtures" / "workflows"
UI_FILES = sorted(comfy_env.WORKFLOWS.glob("*.json")) + sorted(SAVED.glob("*/*.json"))
API_FILES = sorted(SAVED.glob("*/api/*.json"))


def _id(path: Path) -> str:
    return path.relative_to(comfy_env.ROOT).as_posix()


@pytest.fixture(scope="module")
def pack():
    p = comfy_env.pack()
    replacements = importlib.import_module(f"{p.__name__}.nodes.replacements")
    return {cls.define_schema().node_id: cls for cls in p.nodes.NODES}, replacements.RENAMED


def _used(path: Path) -> list[tuple[str, str, list[str]]]:
    """(node id in the file, node type, input ids it names) for every node of the pack in a file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    outside = set(comfy_env.core_nodes()) | comfy_env.FRONT_END_ONLY
    if "nodes" in data:                                      # UI format: linked inputs are named
        return [(str(n["id"]), n["type"], [(i.get("widget") or {}).get("name") or i["name"] for i in n.get("inputs", [])])
                for n in data["nodes"] if n["type"] not in outside]
    return [(nid, n["class_type"], list(n["inputs"])) for nid, n in data.items() if n["class_type"] not in outside]


def _resolve(classes, renamed, node_type, inputs, where):
    """-> (the node class now, the input ids now) of a node a saved workflow uses."""
    if node_type in classes:
        return classes[node_type], inputs
    rename = next((r for r in renamed if r.old_node_id == node_type), None)
    assert rename is not None, (
        f"{where}: node id {node_type!r} is no longer registered. Keep it, or give the node a new id and add "
        "a Rename to nodes/replacements.py so ComfyUI can replace it in saved workflows.")
    missing = [i for i in inputs if i not in rename.old_inputs]
    assert not missing, f"{where}: the Rename of {node_type} does not map its inputs {missing}"
    return classes[rename.new_node_id], [rename.input_id(i) for i in inputs]


def test_the_saved_workflows_are_there():
    versions = sorted(p.name for p in SAVED.iterdir() if p.is_dir())
    assert versions and all(list((SAVED / v).glob("*.json")) for v in versions)
    for v in versions:                                       # every saved UI workflow has its API prompt
        ui, api = ((SAVED / v).glob("*.json"), (SAVED / v / "api").glob("*.json"))
        assert sorted(p.name for p in ui) == sorted(p.name for p in api)


@pytest.mark.parametrize("path", UI_FILES + API_FILES, ids=_id)
def test_every_node_id_and_input_a_workflow_uses_still_exists(pack, path):
    classes, renamed = pack
    used = _used(path)
    assert used, "no node of the pack in the file"
    for nid, node_type, inputs in used:
        where = f"{_id(path)} node {nid}"
        cls, now = _resolve(classes, renamed, node_type, inputs, where)
        ids = {i.id for i in cls.define_schema().inputs}
        gone = [old for old, new in zip(inputs, now) if new not in ids]
        assert not gone, (f"{where}: {node_type} has no input {gone} any more. Inputs a saved workflow uses are "
                          "never renamed or removed in place: add a new node id with a Rename in "
                          "nodes/replacements.py.")


@pytest.mark.parametrize("path", sorted(SAVED.glob("*/*.json")), ids=_id)
def test_saved_widget_values_land_on_the_inputs_they_were_saved_for(pack, path):
    """A UI workflow stores widget values by position: an input inserted before others, or one
    removed, would hand every later value to the wrong widget. Read with today's schemas, the
    saved file gives the values of the API prompt made from it when it was saved."""
    classes, renamed = pack
    ui = json.loads(path.read_text(encoding="utf-8"))
    api = json.loads((path.parent / "api" / path.name).read_text(encoding="utf-8"))
    for n in ui["nodes"]:
        saved = api.get(str(n["id"]))
        if saved is None or saved["class_type"] not in classes and \
                not any(r.old_node_id == saved["class_type"] for r in renamed):
            continue                                          # a core or front-end-only node
        rename = next((r for r in renamed if r.old_node_id == n["type"]), None)
        if rename:
            widgets = [(w, False) for w in rename.old_widget_ids]
        else:
            widgets = comfy_env.widget_names(classes[n["type"]])
        now = comfy_env.widget_values(n.get("widgets_values"), widgets)
        expected = {k: v for k, v in saved["inputs"].items() if not isinstance(v, list)}
        assert now == expected, f"{_id(path)} node {n['id']} ({n['type']}): widget values moved"


@pytest.mark.parametrize("path", API_FILES, ids=_id)
def test_saved_api_prompts_have_every_required_input_and_pass_the_checks(pack, path):
    """ComfyUI refuses an API prompt that lacks a required input ("Required input is missing"),
    so an input added to an existing node must be optional (with its default); the values a saved
    prompt holds pass today's checks (combo lists, ranges, the nodes' own validate_inputs)."""
    classes, renamed = pack
    for nid, node in json.loads(path.read_text(encoding="utf-8")).items():
        if node["class_type"] not in classes and not any(r.old_node_id == node["class_type"] for r in renamed):
            continue
        cls, names = _resolve(classes, renamed, node["class_type"], list(node["inputs"]), f"{_id(path)} node {nid}")
        inputs = dict(zip(names, node["inputs"].values()))
        schema = cls.define_schema()
        lacking = [i.id for i in schema.inputs if not i.optional and i.id not in inputs]
        assert not lacking, (f"{_id(path)} node {nid} ({schema.node_id}) lacks the required input(s) {lacking}: "
                             "ComfyUI rejects this saved prompt. Make a new input optional=True, with its default.")
        for inp in schema.inputs:
            if inp.id in inputs and not isinstance(inputs[inp.id], list):
                one = type("One", (cls,), {"define_schema": classmethod(lambda c, s=schema, i=inp: _only(s, i))})
                comfy_env.validate(one, {inp.id: inputs[inp.id]})


def _only(schema, inp):
    import copy
    s = copy.copy(schema)
    s.inputs = [inp]
    return s


def test_renames_are_registered_where_comfyui_has_node_replacement(pack, monkeypatch):
    """A Rename reaches ComfyUI as an io.NodeReplace (new id, old id, widget order, every input
    mapped) when the pack loads; a ComfyUI without node replacement (0.3.64) loads it all the same."""
    import asyncio
    import types

    classes, _ = pack
    p = comfy_env.pack()
    replacements = importlib.import_module(f"{p.__name__}.nodes.replacements")
    old = replacements.Rename("QwenTTSSpeak", "QwenTTSCustomVoice", old_inputs=("model", "words", "speaker"),
                              old_widget_ids=("words", "speaker"), renamed={"words": "text"})
    monkeypatch.setattr(replacements, "RENAMED", [old])
    registered = []

    async def register(node_replace):
        registered.append(node_replace)

    comfyui = types.SimpleNamespace(node_replacement=types.SimpleNamespace(register=register))
    assert asyncio.run(replacements.register(comfyui)) == 1
    assert registered[0].as_dict() == {
        "new_node_id": "QwenTTSCustomVoice", "old_node_id": "QwenTTSSpeak", "old_widget_ids": ["words", "speaker"],
        "input_mapping": [{"new_id": "model", "old_id": "model"}, {"new_id": "text", "old_id": "words"},
                          {"new_id": "speaker", "old_id": "speaker"}], "output_mapping": None}
    assert asyncio.run(replacements.register(types.SimpleNamespace())) == 0          # no node_replacement
    # a saved workflow with the old id resolves to the new node and input ids
    assert _resolve(classes, [old], "QwenTTSSpeak", ["model", "words"], "test") == \
        (classes["QwenTTSCustomVoice"], ["model", "text"])
    with pytest.raises(AssertionError, match="does not map its inputs"):
        _resolve(classes, [old], "QwenTTSSpeak", ["seed"], "test")
    # ComfyUI calls the extension's on_load: that is where the pack registers them
    calls = []

    async def recorder(api=None):
        calls.append(api)
        return 0
    monkeypatch.setattr(replacements, "register", recorder)
    asyncio.run(asyncio.run(p.comfy_entrypoint()).on_load())
    assert calls == [None]
