"""One voice across chunks, on the fixture checkpoints: every chunk's prompt carries the same
speaker conditioning (built-in speaker, cloned x-vector, in-context reference), and a designed
voice is carried from its first chunk to the next ones as an in-context reference."""
import pytest
import torch

from conftest import load_golden, tiny_model
from longform_helpers import fake_decode
from qwen_tts_core import InputError, UnsupportedModeError
from qwen_tts_core.longform import Speaker, VoiceSpec, narrate
from qwen_tts_core.prompt import Request, VoicePrompt

pytestmark = pytest.mark.core

TEXT = "First sentence here.\n\nSecond one follows.\n\nThird one ends it."


def speaker_for(voice: VoiceSpec) -> tuple[Speaker, list]:
    """A Speaker for fast tests (4 frames a chunk, no retries) that records its takes."""
    speaker = Speaker(voice, seed=0, retries=0, max_frames=4, decode=fake_decode,
                      end_of_speech_required=False, min_reference_seconds=0)
    takes, speak = [], speaker.speak
    speaker.speak = lambda text, style=None: takes.append(speak(text, style)) or takes[-1]
    return speaker, takes


def conditioning(tts, request: Request) -> tuple[torch.Tensor, int | None]:
    """The prompt rows before the text body (instruction, role, language tags, speaker, pad)
    and the index of the speaker row in them (None if the prompt has none)."""
    request = tts.check(request)
    prompt = tts.build_prompts([request])[0]
    n_instruct = len(prompt.ids.get("instruct", []))
    n_tags = 3 if tts.prompts.language_id(request.language, request.speaker) is None else 4
    has_speaker = request.speaker is not None or (request.voice is not None
                                                 and request.voice.speaker_embedding is not None)
    n = n_instruct + 3 + n_tags + int(has_speaker) + 1
    return prompt.embeds[:n], (n_instruct + 3 + n_tags if has_speaker else None)


def golden_clone(in_context: bool) -> VoicePrompt:
    golden, meta = load_golden("generation")
    _, ref_text, _ = meta["cases"]["base_icl"]["prompt"][0]
    return VoicePrompt(golden["base_icl.spk_embedding.0"],
                       golden["base_icl.ref_code.0"] if in_context else None, ref_text)


@pytest.mark.parametrize("kind", ["custom", "clone_xvector", "clone_in_context"])
def test_every_chunk_carries_the_same_speaker_conditioning(kind):
    if kind == "custom":
        tts = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
        voice = VoiceSpec.custom(tts, "vivian", "english", instruct="Speak warmly.")
        expected = tts.model.talker.embed_codes(torch.tensor([tts.config.talker.spk_id["vivian"]]))[0]
    else:
        tts = tiny_model("Tiny-Base", speech_tokenizer=False)
        voice = VoiceSpec.clone_of(tts, golden_clone(kind == "clone_in_context"), "english")
        expected = voice.clone.speaker_embedding
    speaker, takes = speaker_for(voice)
    out = narrate(TEXT, speaker, max_seconds=3)
    assert [t.request.text for t in takes] == ["First sentence here.", "Second one follows.",
                                                "Third one ends it."]
    rows = [conditioning(tts, t.request) for t in takes]
    first, spk_row = rows[0]
    pad = tts.model.talker.embed_text(torch.tensor([tts.config.tts_pad_token_id]))[0]
    assert torch.allclose(first[spk_row], expected + pad)          # the speaker is in the prompt
    for cond, row in rows[1:]:
        assert row == spk_row and torch.equal(cond, first)          # ... identically in every chunk
    if kind == "clone_in_context":
        assert all(t.request.voice.ref_codes is voice.clone.ref_codes for t in takes)
    assert out.audio.numel() > 0 and len(out.reports) == 3


def test_a_designed_voice_is_carried_from_its_first_chunk():
    tts = tiny_model("Tiny-VoiceDesign", speech_tokenizer=False)
    voice = VoiceSpec.design(tts, "A deep, calm male voice.", "english")
    speaker, takes = speaker_for(voice)
    narrate(TEXT, speaker, max_seconds=3)
    first, later = takes[0], takes[1:]
    assert first.request.voice is None                               # designed from the description
    carry = speaker.carry
    assert carry.speaker_embedding is None                           # VoiceDesign has no speaker encoder
    assert torch.equal(carry.ref_codes, first.codes) and carry.ref_text == first.request.text
    prompts = [tts.build_prompts([t.request])[0] for t in later]
    talker = tts.model.talker
    pad = talker.embed_text(torch.tensor([tts.config.tts_pad_token_id]))[0]
    bos = talker.embed_codes(torch.tensor([tts.config.talker.codec_bos_id]))
    reference = torch.cat([bos, talker.embed_frame(first.codes)]) + pad   # non-streaming in-context tail
    for take, prompt in zip(later, prompts):
        assert take.request.voice is carry and take.request.instruct == voice.instruct
        assert torch.allclose(prompt.embeds[-reference.shape[0]:], reference)
        assert torch.equal(prompt.ids["ref"], prompts[0].ids["ref"])
    cond = [conditioning(tts, t.request)[0] for t in takes]
    assert all(torch.equal(c, cond[0]) for c in cond[1:])             # description, role and tags


def test_prompt_without_x_vector_only_lacks_the_speaker_row():
    """prompt.py change: a VoicePrompt without x-vector gives the official in-context layout
    minus the speaker row (the layouts with an x-vector are pinned by the parity tests)."""
    tts = tiny_model("Tiny-Base", speech_tokenizer=False)
    voice = golden_clone(in_context=True)
    with_x = tts.build_prompts([Request("Hello.", "english", voice=voice, non_streaming_text=True)])[0]
    without = tts.build_prompts([Request("Hello.", "english", voice=VoicePrompt(
        None, voice.ref_codes, voice.ref_text), non_streaming_text=True)])[0]
    _, spk_row = conditioning(tts, Request("Hello.", "english", voice=voice))
    assert without.embeds.shape[0] == with_x.embeds.shape[0] - 1
    kept = torch.cat([with_x.embeds[:spk_row], with_x.embeds[spk_row + 1:]])
    assert torch.allclose(without.embeds, kept)


def test_a_carried_voice_is_not_a_clone():
    base = tiny_model("Tiny-Base", speech_tokenizer=False)
    voice = golden_clone(in_context=True)
    with pytest.raises(InputError, match="no speaker embedding"):
        base.generate_voice_clone("Hello.", VoicePrompt(None, voice.ref_codes, voice.ref_text), max_frames=2)
    with pytest.raises(InputError, match="no speaker embedding"):
        VoiceSpec.clone_of(base, VoicePrompt(None, voice.ref_codes, voice.ref_text))


def test_voice_checks():
    cv = tiny_model("Tiny-CustomVoice", speech_tokenizer=False)
    vd = tiny_model("Tiny-VoiceDesign", speech_tokenizer=False)
    with pytest.raises(UnsupportedModeError, match="custom voice needs a CustomVoice model"):
        VoiceSpec.custom(vd, "vivian")
    with pytest.raises(UnsupportedModeError, match="design voice needs the VoiceDesign model"):
        VoiceSpec.design(cv, "A calm voice.")
    with pytest.raises(InputError, match="Unknown speaker 'bob'.*vivian"):
        VoiceSpec.custom(cv, "bob")
    with pytest.raises(InputError, match="needs a description"):
        VoiceSpec.design(vd, "  ")
    with pytest.raises(InputError, match="Unsupported language 'klingon'"):
        VoiceSpec.custom(cv, "vivian", language="klingon")
    with pytest.raises(InputError, match="retries must be"):
        Speaker(VoiceSpec.custom(cv, "vivian"), retries=-1)
