"""Writes example_workflows/*.json in the UI format the ComfyUI front end saves (nodes + links,
widgets_values in widget order, with the seed's control value after it). Widget order and
defaults come from the nodes' own schemas, so the files follow the nodes when they change.

    .venv/bin/python tools/make_example_workflows.py     (needs the test requirements)
"""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import comfy_env  # noqa: E402

OUT = ROOT / "example_workflows"
CUSTOM, DESIGN, BASE, TOKENIZER = ("Qwen3-TTS-12Hz-1.7B-CustomVoice", "Qwen3-TTS-12Hz-1.7B-VoiceDesign",
                                   "Qwen3-TTS-12Hz-1.7B-Base", "Qwen3-TTS-Tokenizer-12Hz")
REFERENCE = "qwen_tts_reference.wav"
VIDEO = "qwen_tts_video.mp4"

class Graph:
    def __init__(self):
        self.nodes, self.links = [], []
        self.classes = comfy_env.node_classes()

    def add(self, type_: str, pos, widgets: dict | None = None, size=(340, 200), title=None) -> dict:
        widgets = dict(widgets or {})
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": type_}, "widgets_values": []}
        if title:
            node["title"] = title
        # the pack's nodes, and comfy_env's stand-ins for the core nodes (same ids, widget order
        # and outputs as ComfyUI's)
        schema = self.classes[type_].define_schema()
        for name, control in comfy_env.widget_names(self.classes[type_]):
            inp = next(i for i in schema.inputs if i.id == name)
            node["widgets_values"].append(widgets.pop(name, inp.default if inp.default is not None
                                                      else (inp.options[0] if getattr(inp, "options", None) else "")))
            if control:
                node["widgets_values"].append("fixed")
        if type_ == "LoadAudio":
            node["widgets_values"] += [None, None]          # the front end's upload/preview widgets
        for inp in schema.inputs:
            if not comfy_env.is_widget(inp):
                node["inputs"].append({"name": inp.id, "type": inp.get_io_type(), "link": None})
        # an output is named by its display name, else by its type (as ComfyUI's output_name)
        node["outputs"] = [{"name": o.display_name or o.get_io_type(), "type": o.get_io_type(), "links": [],
                            "slot_index": i, **({"shape": 6} if o.is_output_list else {})}
                           for i, o in enumerate(schema.outputs)]
        assert not widgets, f"{type_}: unknown widgets {list(widgets)}"
        self.nodes.append(node)
        return node

    def link(self, src: dict, slot: int, dst: dict, name: str) -> None:
        lid = len(self.links) + 1
        typ = src["outputs"][slot]["type"]
        inp = next((i for i in dst["inputs"] if i["name"] == name), None)
        if inp is None:                                     # a widget turned into a socket (e.g. fps)
            inp = {"name": name, "type": typ, "widget": {"name": name}, "link": None}
            dst["inputs"].append(inp)
        inp["link"] = lid
        src["outputs"][slot]["links"].append(lid)
        self.links.append([lid, src["id"], slot, dst["id"], dst["inputs"].index(inp), typ])

    def note(self, pos, text: str, size=(320, 180)) -> None:
        self.nodes.append({"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": list(pos), "size": list(size),
                           "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                           "properties": {}, "widgets_values": [text]})

    def view(self, width=1400, height=950) -> dict:
        """Canvas scale/offset that shows the whole graph in a window of this size."""
        x0 = min(n["pos"][0] for n in self.nodes)
        y0 = min(n["pos"][1] for n in self.nodes)
        x1 = max(n["pos"][0] + n["size"][0] for n in self.nodes)
        y1 = max(n["pos"][1] + n["size"][1] for n in self.nodes)
        scale = round(min(1.0, (width - 100) / (x1 - x0), (height - 120) / (y1 - y0)), 3)
        return {"scale": scale, "offset": [round(40 / scale - x0), round(70 / scale - y0)]}

    def save(self, name: str) -> None:
        # the front end requires a UUID as the workflow id; a fixed one per example
        wf = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"qwen-tts-comfyui/example_workflows/{name}")),
              "revision": 0, "last_node_id": len(self.nodes),
              "last_link_id": len(self.links), "nodes": self.nodes, "links": self.links, "groups": [],
              "config": {}, "extra": {"ds": self.view()}, "version": 0.4}
        OUT.mkdir(exist_ok=True)
        (OUT / f"{name}.json").write_text(json.dumps(wf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def loader(g: Graph, name: str, pos=(0, 0)) -> dict:
    return g.add("QwenTTSModelLoader", pos, {"model_name": name}, size=(320, 170))


def custom_voice():
    g = Graph()
    m = loader(g, CUSTOM)
    gen = g.add("QwenTTSCustomVoice", (370, 0), {
        "text": "Welcome to the show! Today we are talking about the quiet art of making coffee.",
        "language": "English", "speaker": "Ryan", "instruction": "Cheerful and energetic, like a radio host."},
        size=(380, 520))
    save = g.add("SaveAudio", (800, 0), {"filename_prefix": "audio/qwen_tts_custom_voice"}, size=(320, 200))
    g.link(m, 0, gen, "model")
    g.link(gen, 0, save, "audio")
    g.note((0, 220), "**Custom voice**: a built-in speaker of a CustomVoice checkpoint, with an optional "
                     "style instruction. Put the checkpoint in `models/qwen-tts/Qwen3-TTS-12Hz-1.7B-CustomVoice`.")
    g.save("custom_voice")


def voice_design():
    g = Graph()
    m = loader(g, DESIGN)
    gen = g.add("QwenTTSVoiceDesign", (370, 0), {
        "text": "Long ago, when the mountains were young, a lighthouse keeper found a letter in a bottle.",
        "language": "English",
        "voice_description": "An elderly storyteller, male, low gravelly voice, slow and warm, slight British accent."},
        size=(380, 500))
    save = g.add("SaveAudio", (800, 0), {"filename_prefix": "audio/qwen_tts_voice_design"}, size=(320, 200))
    g.link(m, 0, gen, "model")
    g.link(gen, 0, save, "audio")
    g.note((0, 220), "**Voice design**: describe the voice in words (VoiceDesign checkpoint). To keep a "
                     "designed voice for many lines, see *design_then_clone*.")
    g.save("voice_design")


def voice_clone():
    g = Graph()
    m = loader(g, BASE)
    ref = g.add("LoadAudio", (0, 220), {"audio": REFERENCE}, size=(320, 200))
    # the transcript is left empty (auto: x-vector only); a placeholder here would be sent as the transcript
    voice = g.add("QwenTTSVoiceFromAudio", (370, 0), {"reference_text": "", "mode": "auto"}, size=(340, 260))
    gen = g.add("QwenTTSVoiceClone", (760, 0), {
        "text": "This sentence was never recorded, yet it sounds like the reference speaker.",
        "language": "English"}, size=(380, 480))
    save = g.add("SaveAudio", (1190, 0), {"filename_prefix": "audio/qwen_tts_voice_clone"}, size=(320, 200))
    keep = g.add("QwenTTSSaveVoice", (370, 340), {"name": "my_cloned_voice", "overwrite": False}, size=(340, 120))
    g.link(m, 0, voice, "model")
    g.link(ref, 0, voice, "reference_audio")
    g.link(m, 0, gen, "model")
    g.link(voice, 0, gen, "voice")
    g.link(gen, 0, save, "audio")
    g.link(voice, 0, keep, "voice")
    g.note((0, 470), f"**Voice clone** (Base checkpoint): put a 3-10 s clip in ComfyUI's input folder "
                     f"(here `{REFERENCE}`) and type exactly what it says into `reference_text` for the "
                     "closest likeness (left empty, mode auto clones from the x-vector alone). Save Voice "
                     "keeps the voice in `models/qwen-tts-voices/` for the Load Voice node.", size=(320, 220))
    g.save("voice_clone")


def design_then_clone():
    line = "Hello, I am the narrator of this audiobook, and I will read every chapter for you."
    g = Graph()
    md = loader(g, DESIGN)
    mb = loader(g, BASE, (0, 220))
    design = g.add("QwenTTSVoiceDesign", (370, 0), {
        "text": line, "language": "English",
        "voice_description": "A young woman, clear and friendly voice, medium pace, neutral American accent."},
        size=(380, 500))
    voice = g.add("QwenTTSVoiceFromAudio", (800, 0), {"reference_text": line, "mode": "in-context"}, size=(340, 260))
    gen = g.add("QwenTTSVoiceClone", (1190, 0), {
        "text": "Chapter one. The house on the hill.\nNobody had lived there for years.\n"
                "Then one night, a light appeared in the window.",
        "language": "English", "one_text_per_line": True}, size=(380, 480))
    save = g.add("SaveAudio", (1190, 600), {"filename_prefix": "audio/qwen_tts_narrator"}, size=(320, 200))
    keep = g.add("QwenTTSSaveVoice", (800, 340), {"name": "designed_narrator", "overwrite": False}, size=(340, 120))
    g.link(md, 0, design, "model")
    g.link(design, 0, voice, "reference_audio")
    g.link(mb, 0, voice, "model")
    g.link(mb, 0, gen, "model")
    g.link(voice, 0, gen, "voice")
    g.link(gen, 1, save, "audio")
    g.link(voice, 0, keep, "voice")
    g.note((0, 440), "**Design a voice once, reuse it**: the VoiceDesign model speaks one line in the "
                     "described voice; a Base model clones that clip (in-context: the clip plus its text) and "
                     "speaks every line in the same voice. `audio_list` saves one file per line. "
                     "Save Voice keeps it for later sessions (Load Voice).", size=(320, 260))
    g.save("design_then_clone")


def tokenizer_round_trip():
    g = Graph()
    tok = g.add("QwenTTSSpeechTokenizerLoader", (0, 0), {"tokenizer_name": TOKENIZER}, size=(320, 130))
    ref = g.add("LoadAudio", (0, 180), {"audio": REFERENCE}, size=(320, 200))
    enc = g.add("QwenTTSEncodeAudio", (370, 0), size=(300, 80))
    dec = g.add("QwenTTSDecodeCodes", (720, 0), size=(300, 80))
    save = g.add("SaveAudio", (1070, 0), {"filename_prefix": "audio/qwen_tts_round_trip"}, size=(320, 200))
    g.link(tok, 0, enc, "speech_tokenizer")
    g.link(ref, 0, enc, "audio")
    g.link(tok, 0, dec, "speech_tokenizer")
    g.link(enc, 0, dec, "codes")
    g.link(dec, 0, save, "audio")
    g.note((370, 140), "**Speech tokenizer round trip**: audio -> 12.5 Hz codes (16 codebooks) -> audio, with "
                     "the standalone Qwen3-TTS-Tokenizer-12Hz (any model folder works too).", size=(400, 140))
    g.save("tokenizer_round_trip")


def video_voice_over():
    g = Graph()
    vid = g.add("LoadVideo", (0, 0), {"file": VIDEO}, size=(320, 330))
    parts = g.add("GetVideoComponents", (0, 380), size=(300, 100))
    m = loader(g, CUSTOM, (0, 530))
    gen = g.add("QwenTTSCustomVoice", (370, 170), {
        "text": "Here is the view from the top. Take a breath, and enjoy it.",
        "language": "English", "speaker": "Serena", "instruction": "Calm documentary narration."},
        size=(380, 520))
    make = g.add("CreateVideo", (800, 0), {"fps": 30.0}, size=(300, 110))
    save = g.add("SaveVideo", (1150, 0), {"filename_prefix": "video/qwen_tts_voice_over", "format": "auto",
                                          "codec": "auto"}, size=(340, 360))
    g.link(vid, 0, parts, "video")
    g.link(parts, 0, make, "images")
    g.link(parts, 2, make, "fps")
    g.link(m, 0, gen, "model")
    g.link(gen, 0, make, "audio")
    g.link(make, 0, save, "video")
    g.note((370, 0), f"**Video voice-over**: narration generated and muxed onto a video with ComfyUI's core "
                     f"video nodes (the video's own frames and frame rate; `{VIDEO}` in the input folder). "
                     "The video's length decides how much of the narration is kept.", size=(380, 140))
    g.save("video_voice_over")


def long_text_narration():
    g = Graph()
    m = loader(g, CUSTOM)
    spk = g.add("QwenTTSSpeakerBuiltIn", (370, 0), {"speaker": "Ryan", "language": "English",
                                                      "instruction": "Calm audiobook narration.",
                                                      "name": "Narrator"}, size=(340, 250))
    text = ("Chapter one. The lighthouse.\n\nThe keeper climbed the two hundred steps every evening, "
            "at 6 pm sharp, for 40 years. He lit the lamp, wrote one line in the log, and watched the "
            "ships pass.\n\nOne night in March, a ship did not pass. It stopped, turned, and sailed "
            "straight for the rocks.")
    nar = g.add("QwenTTSNarrate", (760, 0), {"text": text}, size=(420, 560))
    save = g.add("SaveAudio", (1230, 0), {"filename_prefix": "audio/qwen_tts_narration"}, size=(320, 200))
    g.link(m, 0, spk, "model")
    g.link(spk, 0, nar, "speaker")
    g.link(nar, 0, save, "audio")
    g.note((0, 220), "**Long text**: any length in one voice. The text is split at sentences (about "
                     "`chunk_seconds` per piece), every piece is spoken by the same speaker, pieces that loop "
                     "or never end are cut and retried, and the report lists what happened. Numbers, dates "
                     "and units are spelled out (normalize_text).", size=(320, 260))
    g.save("long_text_narration")


def subtitle_voice_over():
    srt = ("1\n00:00:00,300 --> 00:00:01,200\nLook up.\n\n"
           "2\n00:00:01,500 --> 00:00:02,400\nAnna: It is beautiful.\n")
    g = Graph()
    vid = g.add("LoadVideo", (0, 0), {"file": VIDEO}, size=(320, 330))
    parts = g.add("GetVideoComponents", (0, 380), size=(300, 100))
    m = loader(g, CUSTOM, (0, 530))
    narrator = g.add("QwenTTSSpeakerBuiltIn", (370, 380), {"speaker": "Ryan", "language": "English",
                                                          "name": "Narrator"}, size=(340, 250))
    anna = g.add("QwenTTSSpeakerBuiltIn", (370, 680), {"speaker": "Serena", "language": "English",
                                                      "name": "Anna"}, size=(340, 250))
    track = g.add("QwenTTSSubtitleVoiceOver", (760, 200), {"subtitles": srt}, size=(420, 640))
    make = g.add("CreateVideo", (1230, 0), {"fps": 30.0}, size=(300, 110))
    save = g.add("SaveVideo", (1580, 0), {"filename_prefix": "video/qwen_tts_subtitle_voice_over",
                                          "format": "auto", "codec": "auto"}, size=(340, 360))
    g.link(vid, 0, parts, "video")
    g.link(vid, 0, track, "video")
    g.link(m, 0, narrator, "model")
    g.link(m, 0, anna, "model")
    g.link(narrator, 0, track, "speaker")
    g.link(anna, 0, track, "speaker_2")
    g.link(parts, 0, make, "images")
    g.link(parts, 2, make, "fps")
    g.link(track, 0, make, "audio")
    g.link(make, 0, save, "video")
    g.note((370, 0), "**Subtitle voice-over**: each subtitle line starts at its time; a line too long "
                     "for its slot is sped up (pitch kept, up to `max_speedup`) or flagged in the report. "
                     "The track gets the video's exact length and is muxed onto the video. "
                     "'Anna: ...' lines use the speaker named Anna.", size=(380, 200))
    g.save("subtitle_voice_over")


def dialogue_script():
    g = Graph()
    mc = loader(g, CUSTOM)
    md = loader(g, DESIGN, (0, 220))
    mb = loader(g, BASE, (0, 440))
    ref = g.add("LoadAudio", (0, 660), {"audio": REFERENCE}, size=(320, 200))
    voice = g.add("QwenTTSVoiceFromAudio", (370, 600), {"reference_text": "", "mode": "auto"}, size=(340, 260))
    anna = g.add("QwenTTSSpeakerBuiltIn", (370, 0), {"speaker": "Serena", "language": "English",
                                                    "name": "Anna"}, size=(340, 250))
    narrator = g.add("QwenTTSSpeakerDesigned", (370, 310), {
        "voice_description": "An old storyteller, deep and slow.", "language": "English",
        "name": "Narrator"}, size=(340, 230))
    ben = g.add("QwenTTSSpeakerCloned", (760, 600), {"language": "English", "name": "Ben"}, size=(340, 170))
    script = ("Narrator: It was late when the phone rang.\nAnna: Hello? Who is this?\n"
              "Ben: It's me. I'm at the station.\n\nNarrator: She put on her coat and went out into the rain.")
    play = g.add("QwenTTSScript", (1150, 0), {"script": script}, size=(420, 700))
    save = g.add("SaveAudio", (1620, 0), {"filename_prefix": "audio/qwen_tts_dialogue"}, size=(320, 200))
    g.link(mc, 0, anna, "model")
    g.link(md, 0, narrator, "model")
    g.link(mb, 0, voice, "model")
    g.link(ref, 0, voice, "reference_audio")
    g.link(mb, 0, ben, "model")
    g.link(voice, 0, ben, "voice")
    g.link(narrator, 0, play, "speaker_1")
    g.link(anna, 0, play, "speaker_2")
    g.link(ben, 0, play, "speaker_3")
    g.link(play, 0, save, "audio")
    g.note((760, 0), "**Multi-speaker script**: one 'Name: line' per turn; every name has a Speaker "
                     "node (here a built-in voice, a designed voice and a voice cloned from a clip). "
                     "`lines` gives each line as its own clip.", size=(340, 200))
    g.save("dialogue_script")


def train_voice():
    g = Graph()
    m = loader(g, BASE)
    data = g.add("QwenTTSVoiceDataset", (0, 220), {"folder": comfy_env.DATASET_FOLDER, "language": "English"},
                 size=(320, 170))
    train = g.add("QwenTTSTrainVoice", (370, 0), {"speaker_name": "my_voice", "method": "lora", "epochs": 3,
                                                  "if_exists": "resume"}, size=(360, 480))
    speak = g.add("QwenTTSCustomVoice", (780, 0), {
        "text": "This voice was trained from a folder of my own recordings.", "language": "English",
        "instruction": ""}, size=(380, 540))
    save = g.add("SaveAudio", (1210, 0), {"filename_prefix": "audio/qwen_tts_trained_voice"}, size=(320, 200))
    g.link(m, 0, train, "model")
    g.link(data, 0, train, "dataset")
    g.link(train, 0, speak, "model")
    g.link(train, 1, speak, "speaker_name")
    g.link(speak, 0, save, "audio")
    g.note((0, 440), f"**Train a voice**: put your recordings in ComfyUI's input folder (here "
                     f"`{comfy_env.DATASET_FOLDER}/`): `name.wav` + `name.txt` with what is said, 1-30 s each, "
                     "5-30 minutes in all. Train Voice turns a Base model into a CustomVoice model with your "
                     "voice as a new speaker, saved as `models/qwen-tts/my_voice` after every epoch (Cancel keeps "
                     "the last one; `if_exists: resume` continues it). Later, load it with the Model Loader.",
           size=(320, 300))
    g.save("train_voice")


if __name__ == "__main__":
    comfy_env.pack()
    for make in (custom_voice, voice_design, voice_clone, design_then_clone, tokenizer_round_trip, video_voice_over,
                 long_text_narration, subtitle_voice_over, dialogue_script, train_voice):
        make()
    print("wrote", sorted(p.name for p in OUT.glob("*.json")))
