"""Streaming generation: audio chunks come out while frames are generated, and the joined
chunks of each item equal the decode of its codes."""
import pytest
import torch

from conftest import tiny_model
from test_parity import requests_of

pytestmark = pytest.mark.core


@pytest.mark.parametrize("case,chunk", [("cv_batch", 4), ("base_icl", 3), ("vd_en", 1)])
def test_stream_equals_generate_then_decode(case, chunk):
    model, reqs = requests_of(case)
    tts = tiny_model(model)
    ref = tts.generate(reqs, max_frames=30, seed=9, decode=True)
    parts = {i: [] for i in range(len(reqs))}
    finals = []
    for c in tts.stream(reqs, chunk_frames=chunk, max_frames=30, seed=9):
        assert not any(f == c.item for f in finals), "no audio after an item's final chunk"
        parts[c.item].append(c.audio)
        if c.final:
            finals.append(c.item)
        else:
            assert c.audio.numel() == chunk * 1920
    assert sorted(finals) == list(range(len(reqs)))
    for i, wav in enumerate(ref.audio):
        joined = torch.cat(parts[i])
        assert joined.shape == wav.shape
        assert (joined - wav).abs().max() < 1e-4


def test_first_audio_arrives_after_chunk_frames():
    """The first chunk is out after `chunk_frames` frames, not after the whole generation."""
    model, reqs = requests_of("cv_en")
    tts = tiny_model(model)
    predictor = tts.model.talker.code_predictor
    calls = []
    predictor.predict = lambda *a, **k: calls.append(1) or type(predictor).predict(predictor, *a, **k)
    try:
        first = next(iter(tts.stream(reqs, chunk_frames=2, max_frames=30, seed=1)))
    finally:
        del predictor.predict
    assert first.item == 0 and first.audio.numel() == 2 * 1920 and not first.final
    assert len(calls) == 2  # frames generated when the first audio came out
