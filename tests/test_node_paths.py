"""The path policy in the nodes (issue 20): Voice Dataset reads only inside ComfyUI's input folder
(names relative to it; absolute, '..', '~', Windows drive/UNC, URLs, NUL and links leading out
refused with one message, the same whether the outside path exists or not); QWEN_TTS_ALLOW_ANY_PATH=1
reads anywhere; Train Voice caches speech codes in user/__qwen_tts/ and writes nothing into input/."""
import json
import math
import shutil
from pathlib import Path

import pytest

import comfy_env
from conftest import AUDIO
from qwen_tts_core.audio import read_wav, write_wav
from qwen_tts_core.errors import InputError, OutsideInputError
from qwen_tts_core.finetune import dataset as dataset_module
from qwen_tts_core.paths import ALLOW_ANY_PATH, outside_message
from test_paths import DOTS, POSIX_OUT, WINDOWS_OUT

TEXT = "The quick brown fox jumps over the lazy dog."
pytestmark = pytest.mark.usefixtures("one_thread")


def run(N, node, **inputs):
    return comfy_env.run_node(N[node], **inputs)


def dataset(N, folder, reference_clip="", language="Auto"):
    return run(N, "QwenTTSVoiceDataset", folder=folder, language=language, reference_clip=reference_clip)


def write_clip(folder: Path, name: str, text: str | None = TEXT) -> Path:
    wav, rate = read_wav(AUDIO / "ref_en.wav")
    folder.mkdir(parents=True, exist_ok=True)
    write_wav(folder / f"{name}.wav", wav[0, : int(1.6 * rate)], rate)
    if text is not None:
        (folder / f"{name}.txt").write_text(text)
    return folder / f"{name}.wav"


@pytest.fixture(scope="module")
def input_dir(N):
    import folder_paths

    return Path(folder_paths.get_input_directory())


@pytest.fixture
def outside(tmp_path):
    """A folder outside input/ with files whose names must never come back."""
    folder = tmp_path / "SECRET_place"
    write_clip(folder, "SECRET_clip")
    (folder / "SECRET_rgb.txt").write_text("secret")
    (folder / "SECRET_sub").mkdir()
    (folder / "SECRET_sub" / "SECRET_constraints.txt").write_text("secret")
    return folder


@pytest.fixture
def made(input_dir):
    """Names made under input/ by a test, removed afterwards (other modules list input/)."""
    names = []
    yield lambda name: names.append(name) or input_dir / name
    for name in names:
        path = input_dir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


@pytest.fixture
def reads(monkeypatch):
    seen = []
    real = dataset_module.read_audio
    monkeypatch.setattr(dataset_module, "read_audio", lambda p: seen.append(Path(p)) or real(p))
    return seen


def refused(N, input_dir, folder, reference_clip="") -> str:
    with pytest.raises(OutsideInputError) as e:
        dataset(N, folder, reference_clip)
    message = str(e.value)
    assert "SECRET" not in message and ".txt" not in message and "/etc" not in message
    assert f"inside ComfyUI's input folder ({input_dir})" in message and f"{ALLOW_ANY_PATH}=1" in message
    return message


@pytest.mark.parametrize("name", POSIX_OUT + WINDOWS_OUT + DOTS)
def test_voice_dataset_refuses_every_name_that_leads_out(N, input_dir, name, reads):
    assert refused(N, input_dir, name) == outside_message("the dataset folder", [input_dir])
    assert reads == []


def test_an_outside_folder_is_refused_alike_whether_it_exists_or_not(N, input_dir, outside, made, reads):
    """The issue's case: /etc (and a link in input/ to a folder of .txt files) used to list the
    files found there; now every outside path gets the same message, and nothing there is read."""
    made("linked_out").symlink_to(outside)
    made("linked_missing").symlink_to(outside / "no_such_folder")
    made("deep").mkdir()
    (input_dir / "deep" / "hop").symlink_to(input_dir / "linked_out")          # inside -> inside -> out
    names = ["/etc", "/no_such_folder_qwen_tts", str(outside), str(outside / "no_such_folder"),
             str(outside / "SECRET_clip.wav"), "linked_out", "linked_missing", "linked_out/SECRET_sub",
             "deep/hop", "deep/hop/SECRET_sub", "~", "../SECRET_place"]
    messages = {name: refused(N, input_dir, name) for name in names}
    assert set(messages.values()) == {outside_message("the dataset folder", [input_dir])}
    assert reads == []
    fingerprint = N["QwenTTSVoiceDataset"].fingerprint_inputs("/etc", "Auto", "")
    assert math.isnan(fingerprint)


def test_a_jsonl_in_input_cannot_name_files_outside(N, input_dir, outside, made, reads):
    """The official recipe's .jsonl, uploaded into input/: its paths resolve relative to it and
    must stay inside; the refusal is the same with the outside files present or gone."""
    write_clip(made("recipe"), "good", text=None)
    rows = {"absolute": {"audio": str(outside / "SECRET_clip.wav")},
            "up": {"audio": "../../SECRET_place/SECRET_clip.wav"},
            "home": {"audio": "~/SECRET_clip.wav"},
            "reference": {"audio": "good.wav", "ref_audio": str(outside / "SECRET_clip.wav")}}
    messages = {}
    for gone in (False, True):
        if gone:
            shutil.rmtree(outside)
        for case, row in rows.items():
            (input_dir / "recipe" / "train.jsonl").write_text("\n".join(
                json.dumps(r) for r in ({"audio": "good.wav", "text": TEXT}, {"text": TEXT, **row})))
            messages[case, gone] = refused(N, input_dir, "recipe/train.jsonl")
            field = "ref_audio" if "ref_audio" in row else "audio"
            assert messages[case, gone] == outside_message(f"the {field} of train.jsonl line 2", [input_dir],
                                                           "the .jsonl file's folder")
    assert all(messages[case, False] == messages[case, True] for case in rows)
    assert reads == []


def test_the_reference_clip_stays_inside_too(N, input_dir, outside, made):
    folder = made("ref_ds")
    write_clip(folder, "a")
    for ref in (str(outside / "SECRET_clip.wav"), str(outside / "missing.wav"), str(folder / "a.wav"),
                "../../SECRET_place/SECRET_clip.wav", "~/a.wav", "C:\\a.wav", "\\\\server\\share\\a.wav"):
        assert refused(N, input_dir, "ref_ds", ref) == outside_message("the reference clip", [input_dir],
                                                                       "the dataset folder")
    data, _ = dataset(N, "ref_ds", "a.wav")
    assert data.ref_audio == folder / "a.wav"


def test_datasets_inside_input_read_as_before(N, input_dir, made):
    """Names relative to input/, in all three layouts; a link that stays inside is followed."""
    write_clip(made("pairs") / "sub", "one")
    write_clip(made("lj") / "wavs", "two", text=None)
    (input_dir / "lj" / "metadata.csv").write_text(f"two|{TEXT}\n")
    made("recipe_ok.jsonl").write_text(json.dumps({"audio": "pairs/sub/one.wav", "text": TEXT,
                                                   "ref_audio": "lj/wavs/two.wav", "language": "english"}))
    made("pairs_link").symlink_to(input_dir / "pairs")
    for folder, layout, clip_names in (("pairs", "folder", ["sub/one.wav"]), ("pairs_link", "folder", ["sub/one.wav"]),
                                       ("lj", "metadata.csv", ["two"]),
                                       ("recipe_ok.jsonl", "jsonl", ["recipe_ok.jsonl line 1 (one.wav)"])):
        data, report = dataset(N, folder)
        assert data.layout == layout and [c.name for c in data.clips] == clip_names, folder
        assert report.startswith(f"1 clips, 1.6 s of speech ({layout} layout in ")
    assert dataset(N, "recipe_ok.jsonl")[0].ref_audio == input_dir / "lj/wavs/two.wav"


def test_allow_any_path_reads_datasets_anywhere(N, input_dir, tmp_path, monkeypatch):
    elsewhere = tmp_path / "my_recordings"
    write_clip(elsewhere, "a")
    write_clip(elsewhere, "b")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(ALLOW_ANY_PATH, "1")
    data, _ = dataset(N, str(elsewhere), reference_clip=str(elsewhere / "b.wav"))
    assert [c.name for c in data.clips] == ["a.wav", "b.wav"] and data.ref_audio == elsewhere / "b.wav"
    assert [c.name for c in dataset(N, "~/my_recordings")[0].clips] == ["a.wav", "b.wav"]
    monkeypatch.delenv(ALLOW_ANY_PATH)
    refused(N, input_dir, str(elsewhere))


TRAIN = dict(output_name="", method="lora", epochs=1, learning_rate=1e-3, batch_size=1, gradient_accumulation=1,
             gradient_checkpointing=False, optimizer="adamw", lora_rank=4, if_exists="stop", training_seed=0)


def test_train_voice_writes_only_its_model_folder_and_the_code_cache(N, rt, input_dir, made):
    """A .jsonl dataset with relative paths trains as before; the speech codes go to
    user/__qwen_tts/speech_codes (not reachable over ComfyUI's HTTP API), the model to
    models/qwen-tts/<name>/; nothing else in ComfyUI's folders changes, input/ least of all."""
    import folder_paths

    folder = made("train_paths")
    write_clip(folder / "wavs", "one", text=None)
    (folder / "train.jsonl").write_text(json.dumps({"audio": "wavs/one.wav", "text": TEXT}))
    cache = Path(folder_paths.get_user_directory()) / "__qwen_tts" / "speech_codes"
    assert rt.speech_codes_cache() == cache
    shutil.rmtree(cache.parent, ignore_errors=True)

    def snapshot():         # everything in ComfyUI's folders (models, input, output, temp, user)
        return {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in input_dir.parent.rglob("*")}

    before = snapshot()
    data, _ = dataset(N, "train_paths/train.jsonl")
    (base, *_) = run(N, "QwenTTSModelLoader", model_name="Qwen3-TTS-12Hz-1.7B-Base", dtype="fp32", device="cpu")
    out = rt.model_roots()[0] / "PathsVoice"
    try:
        _, speaker, report = run(N, "QwenTTSTrainVoice", model=base, dataset=data, speaker_name="PathsVoice", **TRAIN)
        assert speaker == "pathsvoice" and report.startswith(f"{out}: speaker 'pathsvoice', 1 epochs, 1 steps")
        after = snapshot()
        changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
        assert (out / "config.json") in changed and (out / "training" / "state.json") in changed
        assert {p for p in changed if out not in p.parents and cache not in p.parents and p != out} \
            == {cache, cache.parent, cache.parent.parent, out.parent}      # new folders, and the folders they are in
        assert len(list(cache.glob("*.safetensors"))) == 1
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_train_voice_refuses_folder_names_windows_cannot_have(N, input_dir, made):
    write_clip(made("names_ds"), "one")
    data, _ = dataset(N, "names_ds")
    (base, *_) = run(N, "QwenTTSModelLoader", model_name="Qwen3-TTS-12Hz-1.7B-Base", dtype="fp32", device="cpu")
    for speaker, output, message in (("voice", "CON", "Invalid output folder name 'CON': CON is a device name"),
                                     ("voice", "nul.txt", "NUL is a device name that Windows reserves"),
                                     ("aux", "", "Invalid speaker name 'aux': AUX is a device name"),
                                     ("voice", "voice.", "cannot end with a dot"),
                                     ("voice", "..\\x", "cannot contain")):
        with pytest.raises(InputError, match=message):
            run(N, "QwenTTSTrainVoice", model=base, dataset=data, speaker_name=speaker, **{**TRAIN, "output_name": output})


@pytest.mark.parametrize("name", ["C:foo", "C:\\models\\x", "\\\\server\\share\\x", "\\\\?\\C:\\x", "..\\..\\x",
                                  "a\\..\\..\\x", "~/models/x", "file:///models/x", "x\x00", "/etc", ".hidden/x"])
@pytest.mark.parametrize("loader, field", [("QwenTTSModelLoader", "model_name"),
                                           ("QwenTTSSpeechTokenizerLoader", "tokenizer_name")])
def test_loaders_take_only_names_inside_the_models_folder(N, loader, field, name):
    """A loader's value is a folder name under models/qwen-tts/ (links the owner put there are
    followed); any other value, Windows forms included, is refused before the disk is asked."""
    with pytest.raises(InputError, match="folder name .*; pick a folder under models/qwen-tts/"):
        run(N, loader, **{field: name, "dtype": "auto", "device": "cpu"})
