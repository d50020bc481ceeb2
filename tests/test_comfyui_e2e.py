"""The example workflows and the bad inputs of issue #6 in a real ComfyUI server.

Runs only when COMFYUI_DIR points to a ComfyUI checkout (COMFYUI_PYTHON: the python of a venv with
ComfyUI's and this pack's requirements, default: this python). Uses the shared harness
shared/tools/comfy_e2e/run_e2e.py (COMFY_E2E_DIR to point elsewhere): it starts `main.py --cpu`
with this pack in custom_nodes/, queues each workflow through the HTTP API, waits on /history
and checks the output files. The workflows run on the tiny fixture checkpoints, linked under the
real checkpoint names, with their automatic length cut to a fraction of a second
(comfy_env.limit_workflow_length); everything else is as shipped. Run against ComfyUI 0.3.64 and
0.33.0 (README: ComfyUI versions); COMFYUI_FRONTEND_PYTHON (a python with playwright) adds the
check that the real front end loads every example workflow.
"""
import contextlib
import importlib.util
import json
import re
import os
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest
import torch

import comfy_env
from qwen_tts_core.audio import read_wav, write_wav

ROOT = comfy_env.ROOT
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
HARNESS = Path(os.environ.get("COMFY_E2E_DIR", ROOT.parent / "shared" / "tools" / "comfy_e2e"))
NODE_IDS = ["QwenTTSModelLoader", "QwenTTSSpeechTokenizerLoader", "QwenTTSCustomVoice", "QwenTTSVoiceDesign",
            "QwenTTSVoiceFromAudio", "QwenTTSVoiceClone", "QwenTTSSaveVoice", "QwenTTSLoadVoice",
            "QwenTTSEncodeAudio", "QwenTTSDecodeCodes", "QwenTTSSpeakerBuiltIn", "QwenTTSSpeakerDesigned",
            "QwenTTSSpeakerCloned", "QwenTTSNarrate", "QwenTTSSubtitleVoiceOver", "QwenTTSScript",
            "QwenTTSVoiceDataset", "QwenTTSTrainVoice", "QwenTTSNormalizeLoudness", "QwenTTSWatermark",
            "QwenTTSDetectWatermark"]
CUSTOM, BASE = "Qwen3-TTS-12Hz-1.7B-CustomVoice", "Qwen3-TTS-12Hz-1.7B-Base"


@pytest.fixture(scope="module", autouse=True)
def comfyui():
    if not COMFYUI_DIR:
        reason = "COMFYUI_DIR is not set (point it at a ComfyUI checkout to run the real-server tests)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    if not (HARNESS / "run_e2e.py").is_file():
        pytest.fail(f"COMFYUI_DIR is set but the harness is missing: {HARNESS / 'run_e2e.py'}")


def _sampling(seconds=0.3, seed=1):
    return {"one_text_per_line": False, "seed": seed, "temperature": 0.9, "top_k": 50, "top_p": 1.0,
            "repetition_penalty": 1.05, "max_seconds": seconds}


def _custom_voice_prompt(text="Hello.", speaker="Vivian", model=CUSTOM, seconds=0.3, seed=1, prefix="bad"):
    return {"1": {"class_type": "QwenTTSModelLoader", "inputs": {"model_name": model, "dtype": "auto", "device": "auto"}},
            "2": {"class_type": "QwenTTSCustomVoice", "inputs": {
                "model": ["1", 0], "text": text, "language": "Auto", "speaker": speaker, "instruction": "",
                **_sampling(seconds, seed)}},
            "3": {"class_type": "SaveAudio", "inputs": {"audio": ["2", 0], "filename_prefix": f"audio/{prefix}"}}}


def _clone_prompt(reference="qwen_tts_reference.wav", text="", voice_name="e2e voice"):
    return {"1": {"class_type": "QwenTTSModelLoader", "inputs": {"model_name": BASE, "dtype": "auto", "device": "auto"}},
            "2": {"class_type": "LoadAudio", "inputs": {"audio": reference}},
            "3": {"class_type": "QwenTTSVoiceFromAudio", "inputs": {
                "model": ["1", 0], "reference_audio": ["2", 0], "reference_text": text, "mode": "auto"}},
            "4": {"class_type": "QwenTTSVoiceClone", "inputs": {
                "model": ["1", 0], "voice": ["3", 0], "text": "A new line.", "language": "English", **_sampling()}},
            "5": {"class_type": "SaveAudio", "inputs": {"audio": ["4", 0], "filename_prefix": "audio/clone"}},
            "6": {"class_type": "QwenTTSSaveVoice", "inputs": {"voice": ["3", 0], "name": voice_name, "overwrite": False}}}


def _save_voice_prompt(name):
    """Only Save Voice as output: a name refused by validation leaves nothing to run, so ComfyUI
    rejects the whole prompt (with more outputs it would run the valid ones and skip Save Voice)."""
    clone = _clone_prompt(voice_name=name)
    return {k: clone[k] for k in ("1", "2", "3", "6")}


def _load_voice_prompt(name):
    return {"1": {"class_type": "QwenTTSModelLoader", "inputs": {"model_name": BASE, "dtype": "auto", "device": "auto"}},
            "2": {"class_type": "QwenTTSLoadVoice", "inputs": {"model": ["1", 0], "voice_name": name}},
            "3": {"class_type": "QwenTTSVoiceClone", "inputs": {
                "model": ["1", 0], "voice": ["2", 0], "text": "Hi.", "language": "Auto", **_sampling()}},
            "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/loaded"}}}


# workflow file -> (API prompt, regex the error must match; None = must succeed)
BAD_INPUTS = {
    "bad_missing_model": (_custom_voice_prompt(model="Qwen3-TTS-12Hz-0.6B-CustomVoice"),
                          r"hf download Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice --local-dir"),
    "bad_wrong_model_type": ({**_custom_voice_prompt(), "2": {"class_type": "QwenTTSVoiceDesign", "inputs": {
        "model": ["1", 0], "text": "Hi", "language": "Auto", "voice_description": "a deep voice", **_sampling()}}},
        r"needs the VoiceDesign model"),
    "bad_empty_text": (_custom_voice_prompt(text="  "), r"text is empty"),
    "bad_unknown_speaker": (_custom_voice_prompt(speaker="Bob"),
                            r"/prompt rejected[\s\S]*unknown speaker 'Bob'; choose one of the built-in speakers: Vivian"),
    "bad_silent_reference": (_clone_prompt("silent.wav"), r"reference audio is silent"),
    "bad_short_reference": (_clone_prompt("short.wav"), r"voice cloning needs at least 1 s"),
    "bad_text_without_words": (_custom_voice_prompt(text="🎉 ... 👍"), r"text has nothing to say"),
    "bad_dc_offset_reference": (_clone_prompt("dc_offset.wav"), r"only a constant DC offset"),
    "bad_clipped_reference": (_clone_prompt("clipped.wav"), r"badly clipped: \d+\.\d% of its samples"),
    # names are refused by validate_inputs: the prompt is rejected before any node runs
    "bad_voice_name": (_save_voice_prompt("../../x"), r"/prompt rejected[\s\S]*Invalid voice name"),
    "bad_windows_voice_name": (_save_voice_prompt("COM1"), r"/prompt rejected[\s\S]*Windows reserves"),
    "bad_corrupt_voice": (_load_voice_prompt("corrupt"), r"damaged or not a safetensors file"),
    "bad_newer_voice": (_load_voice_prompt("future"), r"newer version of the Qwen3-TTS nodes"),
    "ok_stereo_48k_reference": (_clone_prompt("stereo_48k.wav", voice_name="stereo"), None),
    "ok_long_reference_trimmed": (_clone_prompt("long_75s.wav", voice_name="long"), None),
}


def _has_save_audio_advanced() -> bool:
    """Save Audio (Advanced) is in this ComfyUI (0.25+; 0.3.64 has only Save Audio)."""
    nodes = Path(COMFYUI_DIR) / "comfy_extras" / "nodes_audio.py"
    return nodes.is_file() and '"SaveAudioAdvanced"' in nodes.read_text(encoding="utf-8")


def save_audio_advanced(wf: dict) -> dict | None:
    """The workflow with every Save Audio (FLAC) node swapped for Save Audio (Advanced), format
    flac, as README "Example workflows" tells users of newer ComfyUI to do (links, title and
    filename prefix kept); None when it has no Save Audio."""
    wf = json.loads(json.dumps(wf))
    saves = [n for n in wf["nodes"] if n["type"] == "SaveAudio"]
    for n in saves:
        n["type"] = n["properties"]["Node name for S&R"] = "SaveAudioAdvanced"
        n["widgets_values"] = [n["widgets_values"][0], "flac"]
        n["outputs"] = [{"name": "audio", "type": "AUDIO", "links": [], "slot_index": 0}]
    return wf if saves else None


# Workflows saved with an earlier release that must still run as saved (tests/fixtures/workflows/):
# Train Voice's learning_rate was a number widget (0.0 = auto) in 0.1.0, in both formats.
SAVED_RUNS = {"saved_0.1.0_train_voice.json": "0.1.0/train_voice.json",
              "saved_0.1.0_api_train_voice.json": "0.1.0/api/train_voice.json"}


def _workflows(folder: Path, saved: bool = True) -> list[str]:
    """The example workflows (automatic length cut for the tiny models), where this ComfyUI has
    Save Audio (Advanced) their variants with it (advanced_<name>.json), and SAVED_RUNS; -> the names."""
    folder.mkdir()
    names = []
    for name, rel in SAVED_RUNS.items() if saved else ():
        wf = json.loads((ROOT / "tests" / "fixtures" / "workflows" / rel).read_text())
        wf = comfy_env.limit_workflow_length(wf) if "nodes" in wf else comfy_env.limit_length(wf)
        (folder / name).write_text(json.dumps(wf))
        names.append(name)
    for path in sorted(comfy_env.WORKFLOWS.glob("*.json")):
        wf = comfy_env.limit_workflow_length(json.loads(path.read_text()))
        variants = {path.name: wf}
        if _has_save_audio_advanced() and save_audio_advanced(wf) is not None:
            variants[f"advanced_{path.name}"] = save_audio_advanced(wf)
        for name, variant in variants.items():
            (folder / name).write_text(json.dumps(variant))
            names.append(name)
    return names


def test_save_audio_advanced_variant_swaps_only_the_save_nodes():
    wf = json.loads((comfy_env.WORKFLOWS / "voice_clone.json").read_text())
    swapped = save_audio_advanced(wf)
    before = {n["id"]: n for n in wf["nodes"]}
    changed = [n for n in swapped["nodes"] if n != before[n["id"]]]
    assert [(n["type"], n["widgets_values"]) for n in changed] == [("SaveAudioAdvanced", ["audio/qwen_tts_voice_clone",
                                                                                           "flac"])]
    assert swapped["links"] == wf["links"]
    assert save_audio_advanced(json.loads((comfy_env.WORKFLOWS / "video_voice_over.json").read_text())) is None


def _inputs(folder: Path) -> Path:
    comfy_env.make_input_dir(folder)
    wav, rate = read_wav(comfy_env.FIXTURE_AUDIO / "ref_en.wav")
    write_wav(folder / "silent.wav", torch.zeros(1, 3 * 24000))
    write_wav(folder / "short.wav", wav[:, : rate // 2], rate)
    write_wav(folder / "dc_offset.wav", torch.full((1, 3 * 24000), 0.25))
    write_wav(folder / "clipped.wav", (wav[:1] * 8).clamp(-1, 1), rate)
    import torchaudio.functional as AF

    w48 = AF.resample(wav[:1], rate, 48000)
    write_wav(folder / "stereo_48k.wav", torch.cat([w48, 0.7 * w48]), 48000)
    write_wav(folder / "long_75s.wav", wav[:1].repeat(1, 75 * rate // wav.shape[-1] + 1)[:, : 75 * rate], rate)
    video = folder / comfy_env.VIDEO_INPUT
    if video.exists():
        video.unlink()
    subprocess.run([PYTHON, "-c", "import sys; sys.path[:0] = sys.argv[2:]; import comfy_env; "
                    "comfy_env.write_test_video(__import__('pathlib').Path(sys.argv[1]))",
                    str(video), str(ROOT / "tests"), str(ROOT)], check=True)
    return folder


def _voices(models: Path) -> None:
    from safetensors.torch import load_file, save_file

    from qwen_tts_core.prompt import VoicePrompt
    from qwen_tts_core.voice import Voice, save_voice

    folder = models / "qwen-tts-voices"
    (folder / "corrupt.safetensors").write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00{not json")
    path = save_voice(Voice(VoicePrompt(torch.randn(32)), "base", "1b7", 32), folder, "future")
    save_file(load_file(str(path)), str(path), metadata={"format": "qwen-tts-voice", "format_version": "2"})


def _run_harness(tmp: Path, workflows: Path, models: Path, inputs: Path, expect_fail=(), extra=()):
    report = tmp / "report.json"
    cmd = [sys.executable, str(HARNESS / "run_e2e.py"), "--comfy", COMFYUI_DIR, "--pack", str(ROOT),
           "--pack-name", "qwen-tts-comfyui", "--models", str(models), "--workflows", str(workflows),
           "--python", PYTHON, f"--server-arg=--input-directory={inputs}", "--json-report", str(report),
           "--artifacts", str(tmp / "artifacts"), *[f"--expect-node={n}" for n in NODE_IDS],
           *[f"--expect-fail={e}" for e in expect_fail], *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    print(proc.stdout[-20000:], proc.stderr[-5000:])
    return proc, json.loads(report.read_text()) if report.exists() else {}


def test_example_workflows_and_bad_inputs(tmp_path):
    models = comfy_env.make_models_dir(tmp_path / "models")
    _voices(models)
    inputs = _inputs(tmp_path / "input")
    workflows = tmp_path / "workflows"
    examples = _workflows(workflows)
    expect = []
    for name, (prompt, error) in BAD_INPUTS.items():
        (workflows / f"{name}.json").write_text(json.dumps(prompt))
        if error:
            expect.append(f"{name}={error}")
    proc, report = _run_harness(tmp_path, workflows, models, inputs, expect)
    results = {r["workflow"]: r for r in report.get("workflows", [])}
    assert report.get("server_alive_at_end") is True
    assert sorted(report.get("pack_nodes", [])) == sorted(NODE_IDS)
    assert not report.get("pack_import_problems")
    for name, r in results.items():
        assert r["ok"], f"{name}: {r['error']}"
    assert len(results) == len(examples) + len(BAD_INPUTS)
    assert len([n for n in examples if n.startswith("advanced_")]) == (8 if _has_save_audio_advanced() else 0)
    assert proc.returncode == 0
    for name in examples + [f"{n}.json" for n, (_, e) in BAD_INPUTS.items() if e is None]:
        files = [f for f in results[name]["outputs"] if f["exists"] and f["bytes"] > 0]
        assert files, name
        for f in files:
            streams = {s["type"]: s for s in (f.get("media") or {}).get("streams", [])}
            assert "audio" in streams, (name, f)
            if "video" in streams:   # SaveVideo writes mp4: h264 + AAC (stereo)
                assert name in ("video_voice_over.json", "subtitle_voice_over.json")
                assert streams["video"]["codec"] == "h264" and streams["audio"]["codec"] == "aac"
            else:
                assert streams["audio"]["sample_rate"] == 24000 and streams["audio"]["channels"] == 1
    assert len(results["design_then_clone.json"]["outputs"]) == 3          # one file per line
    for name in [n for n in examples if n.startswith("advanced_")]:       # Save Audio (Advanced): flac too
        original = results[name.removeprefix("advanced_")]["outputs"]
        assert [(f["media"]["format"], f["bytes"] > 0) for f in results[name]["outputs"]] == \
            [(f["media"]["format"], True) for f in original], name
    track = next(f for f in results["subtitle_voice_over.json"]["outputs"] if f["exists"])
    streams = {s["type"]: s for s in track["media"]["streams"]}
    assert abs(streams["audio"]["duration_s"] - streams["video"]["duration_s"]) < 0.05  # track = video length
    log = (tmp_path / "artifacts" / "comfyui.log").read_text(errors="replace")
    assert "Reference audio is 75.0 s long; using its first 60 s" in log
    voices = sorted(p.name for p in (models / "qwen-tts-voices").iterdir())
    assert "my_cloned_voice.safetensors" in voices and "designed_narrator.safetensors" in voices
    assert not (tmp_path / "x.safetensors").exists()


def test_no_model_folders_at_all(tmp_path):
    (tmp_path / "models").mkdir()
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "custom_voice.json").write_text((comfy_env.WORKFLOWS / "custom_voice.json").read_text())
    proc, report = _run_harness(tmp_path, workflows, tmp_path / "models", comfy_env.make_input_dir(tmp_path / "in"),
                                [r"custom_voice=There are no Qwen3-TTS folders there yet.*hf download "
                                 r"Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice --local-dir .*models/qwen-tts/"])
    assert proc.returncode == 0 and report["server_alive_at_end"] is True


def test_front_end_loads_every_example_workflow(tmp_path):
    """The real front end of this ComfyUI (headless Chromium, shared/tools/comfy_e2e/
    check_frontend.py) loads each example workflow with no missing node, and its own
    graphToPrompt() gives the prompt the other tests run. Needs COMFYUI_FRONTEND_PYTHON: a python
    with playwright (Debian's chromium drives the page; no browser download)."""
    pw = os.environ.get("COMFYUI_FRONTEND_PYTHON")
    if not pw:
        reason = "COMFYUI_FRONTEND_PYTHON is not set (a python with playwright, for the front-end check)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    inputs = _inputs(tmp_path / "input")
    names = sorted(n for n in _workflows(tmp_path / "workflows") if "_api_" not in n)   # UI format only
    proc = subprocess.run([pw, str(HARNESS / "check_frontend.py"), "--comfy", COMFYUI_DIR, "--pack", str(ROOT),
                           "--python", PYTHON, "--models", str(comfy_env.make_models_dir(tmp_path / "models")),
                           "--inputs", str(inputs), "--workflows", str(tmp_path / "workflows")],
                          capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-10000:], proc.stderr[-3000:])
    assert f"frontend: {len(names)}/{len(names)} workflows load without missing nodes" in proc.stdout
    assert proc.returncode == 0
    lines = dict(re.findall(r"^\[OK  \] (\S+\.json): .*graphToPrompt ([=!]=) run_e2e conversion$", proc.stdout, re.M))
    assert sorted(lines) == names
    # Front end 1.49 (ComfyUI 0.33) also sends the defaults of optional inputs a workflow has no
    # value for (CreateVideo bit_depth, SaveVideo's hidden codec; in a workflow saved by an
    # earlier version of the pack, the inputs added since, such as loudness and watermark); the
    # server applies the same defaults to the prompts the other tests run. Anywhere else the two
    # prompts are equal: the examples carry a value for every widget of the pack's nodes.
    for name, cmp in lines.items():
        assert cmp == "==" or name.startswith("saved_") or "CreateVideo" in (tmp_path / "workflows" / name).read_text(), name


def _harness_module():
    spec = importlib.util.spec_from_file_location("run_e2e", HARNESS / "run_e2e.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


@contextlib.contextmanager
def _server(tmp_path, server_args=()):
    """A real ComfyUI server (`main.py --cpu`) with this pack and the fixture models; yields
    (harness module, server, base dir)."""
    e2e = _harness_module()
    base = tmp_path / "base"
    for d in ("custom_nodes", "input", "output", "temp", "user"):
        (base / d).mkdir(parents=True)
    (base / "custom_nodes" / "qwen-tts-comfyui").symlink_to(ROOT)
    e2e.link_models(str(comfy_env.make_models_dir(tmp_path / "models")), str(base / "models"))
    args = types.SimpleNamespace(python=PYTHON, comfy=COMFYUI_DIR, port=0, with_api_nodes=False,
                                 server_arg=list(server_args), online=False,
                                 pycache=os.path.join("/tmp", "comfy_e2e_pycache"))
    server = e2e.Server(args, str(base))
    server.start()
    try:
        ready, why = server.wait_ready(600)
        assert ready, why + server.log_tail(40)
        yield e2e, server, base
    finally:
        server.stop()


def _queue(e2e, server, prompt) -> str:
    st, body = e2e.http_json(server.url, "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    assert st == 200, body
    return body["prompt_id"]


def _finished(e2e, server, pid, timeout=600) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        st, h = e2e.http_json(server.url, f"/history/{pid}")
        if st == 200 and pid in h and (h[pid].get("status") or {}).get("completed") is not None:
            status = h[pid]["status"]
            if status.get("completed") or status.get("status_str") in ("success", "error"):
                return h[pid]
        time.sleep(0.3)
    raise AssertionError(f"prompt {pid} did not finish")


def test_interrupt_then_two_prompts_back_to_back(tmp_path):
    with _server(tmp_path) as (e2e, server, base):
        def queue(prompt):
            return _queue(e2e, server, prompt)

        def finished(pid):
            return _finished(e2e, server, pid)

        # 40 clips in one batch, up to 600 s each: the batch runs until the last clip ends, so it is
        # still generating when the interrupt comes (a single clip of a random model may end early)
        long = _custom_voice_prompt(text="\n".join(["A long narration."] * 40), seconds=600, prefix="long")
        long["2"]["inputs"]["one_text_per_line"] = True
        long_pid = queue(long)
        # wait until the generation is under way (model loaded, frames coming)
        t0 = time.time()
        while "Loaded Qwen3-TTS-12Hz-1.7B-CustomVoice" not in server.log_text() and time.time() - t0 < 300:
            time.sleep(0.5)
        time.sleep(3)
        t_interrupt = time.time()
        assert e2e.http_json(server.url, "/interrupt", {})[0] == 200
        entry = finished(long_pid)
        print(f"interrupt: the prompt ended {time.time() - t_interrupt:.1f} s after /interrupt")
        kinds = {k: d for k, d in entry["status"]["messages"]}
        # interrupted inside the generation node (40 clips of up to 600 s cannot have finished)
        assert "execution_interrupted" in kinds and kinds["execution_interrupted"]["node_type"] == "QwenTTSCustomVoice"
        assert not list((base / "output").rglob("long*"))
        # two prompts queued back to back, the second before the first finished
        first = queue(_custom_voice_prompt(seed=1, prefix="first"))
        second = queue(_custom_voice_prompt(seed=2, prefix="second"))
        for pid in (first, second):
            assert finished(pid)["status"]["status_str"] == "success"
        saved = base / "output" / "audio"
        assert list(saved.glob("first_*.flac")) and list(saved.glob("second_*.flac"))
        # "Unload models" (the front end's button): the model is let go, and loaded again when used
        loads = server.log_text().count("Requested to load QwenTTSWeights")
        assert e2e.http_json(server.url, "/free", {"unload_models": True, "free_memory": True})[0] == 200
        time.sleep(2)
        assert finished(queue(_custom_voice_prompt(seed=3, prefix="after_unload")))["status"]["status_str"] == "success"
        assert server.log_text().count("Requested to load QwenTTSWeights") > loads
        assert server.alive() and e2e.http_json(server.url, "/system_stats")[0] == 200


def _audio_digest(path: Path) -> str:
    """sha256 of the decoded samples of an audio file (PyAV, from the server's venv)."""
    code = ("import av, hashlib, sys, numpy as np\n"
            "with av.open(sys.argv[1]) as f:\n"
            "    pcm = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])\n"
            "print(hashlib.sha256(pcm.tobytes()).hexdigest(), pcm.size)")
    return subprocess.run([PYTHON, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout


def test_loaders_run_again_when_the_cache_dropped_their_models(tmp_path):
    """The RAM-pressure cache (the default from ComfyUI 0.23) may drop a loader's output between
    prompts, or right after the loader ran when RAM is short. Forced here for every node: a RAM
    headroom no machine has (--cache-ram); ComfyUI 0.3.64 has no such cache, there --cache-none
    runs every node of every prompt. Each prompt still runs, its loader runs again, and a prompt
    repeated after its model was dropped gives the same audio."""
    cli = (Path(COMFYUI_DIR) / "comfy" / "cli_args.py").read_text(encoding="utf-8")
    cache_args = ["--cache-ram", "100000"] if "--cache-ram" in cli else ["--cache-none"]
    with _server(tmp_path, cache_args) as (e2e, server, base):
        st, object_info = e2e.http_json(server.url, "/object_info")
        assert st == 200

        def narration(prefix):    # loader -> Speaker -> Narrate: the speaker keeps the model
            prompt, _ = e2e.ui_to_api(comfy_env.load_workflow(comfy_env.WORKFLOWS / "long_text_narration.json"),
                                      object_info)
            for node in prompt.values():
                if node["class_type"] == "QwenTTSNarrate":
                    node["inputs"]["text"] = "Hello there."
                if node["class_type"] == "SaveAudio":
                    node["inputs"]["filename_prefix"] = f"audio/{prefix}"
            return prompt

        prompts = {"custom_a": _custom_voice_prompt(seed=4, prefix="custom_a"), "narration_a": narration("narration_a"),
                   "custom_b": _custom_voice_prompt(seed=4, prefix="custom_b"), "narration_b": narration("narration_b")}
        for name, prompt in prompts.items():
            entry = _finished(e2e, server, _queue(e2e, server, prompt))
            assert entry["status"]["status_str"] == "success", (name, entry["status"])
        log = server.log_text()
        runs = re.findall(r"(Loaded|Reusing) Qwen3-TTS-12Hz-1.7B-CustomVoice\b", log)
        assert len(runs) == 4, runs                                    # the loader ran in every prompt
        print("cache:", " ".join(cache_args), "loader runs:", runs, "load times (s):",
              re.findall(r"Loaded Qwen3-TTS-12Hz-1.7B-CustomVoice: .* in ([0-9.]+) s", log))
        out = base / "output" / "audio"
        digests = {name: _audio_digest(next(out.glob(f"{name}_*.flac"))) for name in prompts}
        assert digests["custom_a"] == digests["custom_b"] and digests["narration_a"] == digests["narration_b"]
        assert digests["custom_a"] != digests["narration_a"]
        assert server.alive()


def _files_under(folder: str, suffix: str = ".txt") -> set[str]:
    """Relative paths and names of the files under `folder` that end with `suffix` (what Voice
    Dataset used to list when it was pointed at a folder outside input/)."""
    names = set()
    for top, _, files in os.walk(folder, onerror=lambda e: None):
        for name in files:
            if name.endswith(suffix):
                names |= {name, os.path.relpath(os.path.join(top, name), folder)}
    return names


def test_a_prompt_cannot_read_outside_input(tmp_path, monkeypatch):
    """Issue 20: Voice Dataset pointed at /etc, at a folder outside input/ (present or missing), at a
    link in input/ leading there, and a .jsonl in input/ or a reference clip naming a file there:
    each prompt fails with the one refusal, and neither the server's answers (/prompt, the whole
    /history) nor its log name any file from outside."""
    from qwen_tts_core.paths import ALLOW_ANY_PATH

    monkeypatch.delenv(ALLOW_ANY_PATH, raising=False)          # the server inherits this environment
    outside = tmp_path / "place_outside"
    wav, rate = read_wav(comfy_env.FIXTURE_AUDIO / "ref_en.wav")
    (outside / "SECRET_sub").mkdir(parents=True)
    write_wav(outside / "SECRET_clip.wav", wav[:, : 2 * rate], rate)
    write_wav(outside / "SECRET_voice.wav", wav[:, : 2 * rate], rate)
    (outside / "SECRET_clip.txt").write_text("The quick brown fox.")
    (outside / "SECRET_sub" / "SECRET_rgb.txt").write_text("The quick brown fox.")
    with _server(tmp_path) as (e2e, server, base):
        inputs = comfy_env.make_input_dir(base / "input")
        (inputs / "linked").symlink_to(outside)
        (inputs / "recipe").mkdir()
        (inputs / "recipe" / "train.jsonl").write_text(json.dumps({"audio": str(outside / "SECRET_voice.wav"),
                                                                   "text": "The quick brown fox."}))
        cases = {"etc": ("/etc", ""), "outside": (str(outside), ""), "missing": (str(outside / "nowhere"), ""),
                 "link": ("linked", ""), "link_deeper": ("linked/SECRET_sub", ""),
                 "jsonl": ("recipe/train.jsonl", ""),
                 "reference": (comfy_env.DATASET_FOLDER, str(outside / "SECRET_clip.wav"))}
        answers, messages = [], {}
        for case, (folder, reference) in cases.items():
            prompt = {"1": {"class_type": "QwenTTSVoiceDataset",
                            "inputs": {"folder": folder, "language": "Auto", "reference_clip": reference}}}
            st, body = e2e.http_json(server.url, "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
            assert st == 200, body
            answers.append(body)
            entry = _finished(e2e, server, body["prompt_id"])
            assert entry["status"]["status_str"] == "error", (case, entry["status"])
            error = next(d for kind, d in entry["status"]["messages"] if kind == "execution_error")
            assert error["node_type"] == "QwenTTSVoiceDataset" and error["exception_type"].endswith("OutsideInputError")
            messages[case] = error["exception_message"]
        rule = f"must lie inside ComfyUI's input folder ({base / 'input'})"
        assert messages["etc"].startswith(f"The dataset folder {rule}, named by a path relative to it")
        assert {messages[c] for c in ("etc", "outside", "missing", "link", "link_deeper")} == {messages["etc"]}
        assert messages["jsonl"].startswith(f"The audio of train.jsonl line 1 {rule}")
        assert messages["reference"].startswith(f"The reference clip {rule}")
        assert all(f"{ALLOW_ANY_PATH}=1" in m for m in messages.values())
        st, history = e2e.http_json(server.url, "/history")
        assert st == 200 and len(history) == len(cases)
        said = json.dumps([answers, history]) + server.log_text()
        # every file name from outside, but the one the reference case typed (the prompt is kept in /history)
        names = _files_under("/etc") | {n for n in _files_under("/etc", "") if "/" in n} \
            | _files_under(str(outside), "") - {"SECRET_clip.wav"}
        assert "SECRET_sub/SECRET_rgb.txt" in names and "SECRET_voice.wav" in names
        leaked = {name for name in names if name in said}
        assert not leaked
        assert "SECRET_clip.wav" not in said.replace(str(outside / "SECRET_clip.wav"), "")
        print(f"refused {len(cases)} prompts alike; {len(names)} names from outside checked; "
              f"the refusal: {messages['etc']}")
        assert server.alive()


def _saved_audio(path: Path) -> dict:
    """A saved audio file as the server's venv reads it: its metadata tags and its loudness
    (pyloudnorm on the decoded samples)."""
    code = ("import av, json, sys, numpy as np, pyloudnorm\n"
            "with av.open(sys.argv[1]) as f:\n"
            "    tags = dict(f.metadata)\n"
            "    rate = f.streams.audio[0].rate\n"
            "    pcm = np.concatenate([fr.to_ndarray() for fr in f.decode(audio=0)], axis=-1).astype(np.float64)\n"
            "pcm = pcm / 32768.0 if np.abs(pcm).max() > 1.5 else pcm\n"
            "print(json.dumps({'tags': tags, 'lufs': pyloudnorm.Meter(rate).integrated_loudness(pcm.T), "
            "'peak': float(np.abs(pcm).max())}))")
    out = subprocess.run([PYTHON, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_loudness_and_the_saved_files_metadata(tmp_path):
    """In a real server: a clip generated with loudness -16 LUFS and one normalised by Normalize
    Loudness are saved by Save Audio at about -16 LUFS; the file's metadata (ComfyUI's 'prompt'
    tag) names the node that generated the speech and its loudness and watermark settings; the
    watermark switch without weights stops the prompt with the download entry's name."""
    with _server(tmp_path) as (e2e, server, base):
        prompt = _custom_voice_prompt(text="Hello there. This clip is set to the loudness of a podcast.",
                                      seconds=2.0, prefix="levelled")
        prompt["2"]["inputs"].update(loudness="-16 LUFS (web, podcasts)", watermark=False)
        prompt["4"] = {"class_type": "QwenTTSNormalizeLoudness", "inputs": {
            "audio": ["2", 0], "loudness": "-23 LUFS (broadcast, EBU R128)", "true_peak_ceiling": -1.0}}
        prompt["5"] = {"class_type": "SaveAudio", "inputs": {"audio": ["4", 0], "filename_prefix": "audio/normalized"}}
        assert _finished(e2e, server, _queue(e2e, server, prompt))["status"]["status_str"] == "success"
        levelled = _saved_audio(next((base / "output" / "audio").glob("levelled_*.flac")))
        normalized = _saved_audio(next((base / "output" / "audio").glob("normalized_*.flac")))
        print(f"saved FLACs: {levelled['lufs']:.2f} LUFS (generation node), {normalized['lufs']:.2f} LUFS (node)")
        assert levelled["lufs"] == pytest.approx(-16.0, abs=0.5) and normalized["lufs"] == pytest.approx(-23.0, abs=0.5)
        saved_prompt = json.loads(levelled["tags"]["prompt"])
        assert saved_prompt["2"]["class_type"] == "QwenTTSCustomVoice"
        assert saved_prompt["2"]["inputs"]["loudness"] == "-16 LUFS (web, podcasts)"
        assert saved_prompt["2"]["inputs"]["watermark"] is False

        marked = _custom_voice_prompt(prefix="marked")
        marked["2"]["inputs"]["watermark"] = True
        entry = _finished(e2e, server, _queue(e2e, server, marked))
        assert entry["status"]["status_str"] == "error"
        assert "AudioSeal 16-bit (download, 93 MB)" in json.dumps(entry["status"]["messages"])
        assert not list((base / "output" / "audio").glob("marked_*"))
