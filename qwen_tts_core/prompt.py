"""Talker prompts: the text track and the codec track of every mode, summed position by position.

Layout (one item; `|` separates segments, "-" is nothing on that track):

    text  : [instruct...] <|im_start|> assistant \\n | pad ... pad  bos | <body>
    codec :       -            -         -       - | tags [spk]  pad  | <body>

`tags` are the think tags with the language id (or "nothink" for auto); `spk` is a built-in
speaker id or a cloned speaker's x-vector (absent when a voice prompt has no x-vector: the
long-form carry of a designed voice, whose model has no speaker encoder). The body depends on the mode:
  streaming text     text: t0          codec: bos         then t1..tn, eos fed one per frame
  non-streaming text text: t0..tn eos pad  codec: pad..pad bos   then pad per frame
  clone, in-context  text: ref + target text, eos   codec: bos + reference frames
                     (streaming: aligned position by position, the longer side continues as
                     the per-frame text; non-streaming: text first, then the frames)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import ModelConfig
from .errors import ModelFolderError
from .talker import Talker

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass
class VoicePrompt:
    """A cloned voice: the reference's x-vector and, for in-context cloning, its codes and
    transcript. Without an x-vector (None) it is a pure in-context voice: long-form synthesis
    uses one to carry a designed voice from its first chunk to the next ones."""
    speaker_embedding: torch.Tensor | None     # [D] float32
    ref_codes: torch.Tensor | None = None      # [T, 16] int64
    ref_text: str | None = None

    @property
    def in_context(self) -> bool:
        return self.ref_codes is not None


@dataclass
class Request:
    """One item of a generation batch."""
    text: str
    language: str = "auto"
    speaker: str | None = None                 # built-in speaker (CustomVoice)
    instruct: str | None = None                # style / voice description
    voice: VoicePrompt | None = None           # cloned voice (Base)
    non_streaming_text: bool = True


@dataclass
class TalkerPrompt:
    embeds: torch.Tensor                       # [L, D] prefill input
    trailing: torch.Tensor                     # [N, D] text track fed one entry per frame
    ids: dict = field(default_factory=dict)    # token ids used (for inspection and tests)


class ChatTokenizer:
    """Token ids of the chat template around the user's strings (target text, instruction,
    reference transcript), with those strings read as plain text.

    The official package formats the strings into the template and tokenizes the whole string,
    so text that spells a special or added token ("<|im_end|>", "<tts_pad>", "<think>", ...)
    becomes that token: it can close the turn, inject an instruction or end the text track. Here
    the template's own special tokens are inserted by id, and the text between them is tokenized
    by the same BPE model, normalizer and pre-tokenizer with no added vocabulary at all. A
    tokenizer cuts its input at special tokens first and reads each piece on its own, so for
    strings that spell no added token the ids equal the official ones."""

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelFolderError(f"The text tokenizer ({type(tokenizer).__name__}) is not a fast "
                                   "(tokenizers) tokenizer; Qwen3-TTS needs its vocab.json and merges.txt.")
        self.plain = Tokenizer(backend.model)           # shares the BPE model; no added tokens
        if backend.normalizer is not None:
            self.plain.normalizer = backend.normalizer
        if backend.pre_tokenizer is not None:
            self.plain.pre_tokenizer = backend.pre_tokenizer
        self.im_start = tokenizer.convert_tokens_to_ids(IM_START)
        self.im_end = tokenizer.convert_tokens_to_ids(IM_END)
        if not isinstance(self.im_start, int) or not isinstance(self.im_end, int):
            raise ModelFolderError(f"The text tokenizer has no {IM_START} / {IM_END} tokens; it is "
                                   "not the Qwen tokenizer of a Qwen3-TTS checkpoint.")
        self.newline = self.text("\n")

    def text(self, s: str) -> list[int]:
        """Plain-text ids of `s`: nothing in it is read as a special token."""
        return self.plain.encode(s, add_special_tokens=False).ids

    def turn(self, role: str, content: str) -> list[int]:
        """<|im_start|>{role}\n{content}<|im_end|>\n"""
        return [self.im_start, *self.text(f"{role}\n{content}"), self.im_end, *self.newline]

    def target(self, text: str) -> list[int]:
        """<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"""
        return self.turn("assistant", text) + [self.im_start, *self.text("assistant\n")]


class PromptBuilder:
    def __init__(self, talker: Talker, config: ModelConfig, tokenizer):
        self.talker, self.config = talker, config
        self.chat = ChatTokenizer(tokenizer)

    @property
    def device(self):
        return self.talker.codec_head.weight.device

    def tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def language_id(self, language: str, speaker: str | None) -> int | None:
        """Codec id of the language tag; None for auto. Dialect speakers use their dialect's id
        when the language is Chinese or auto."""
        t = self.config.talker
        lang = language.lower()
        dialect = t.spk_is_dialect.get(speaker.lower()) if speaker else False
        if dialect and lang in ("chinese", "auto"):
            return t.codec_language_id[dialect]
        return None if lang == "auto" else t.codec_language_id[lang]

    def build(self, req: Request) -> TalkerPrompt:
        t, c = self.talker, self.config
        tc = c.talker

        def codes(*ids):
            return t.embed_codes(torch.tensor(ids, dtype=torch.long, device=self.device))

        def text(ids):
            return t.embed_text(ids)

        tts_bos, tts_eos, tts_pad = text(torch.tensor(
            [c.tts_bos_token_id, c.tts_eos_token_id, c.tts_pad_token_id], device=self.device)).split(1)
        ids = {"text": self.tensor(self.chat.target(req.text))}
        parts = []
        if req.instruct:
            ids["instruct"] = self.tensor(self.chat.turn("user", req.instruct))
            parts.append(text(ids["instruct"]))

        lang = self.language_id(req.language, req.speaker)
        tags = (tc.codec_think_id, tc.codec_think_bos_id, lang, tc.codec_think_eos_id) if lang is not None \
            else (tc.codec_nothink_id, tc.codec_think_bos_id, tc.codec_think_eos_id)
        speaker = []
        if req.voice is not None and req.voice.speaker_embedding is not None:
            speaker = [req.voice.speaker_embedding.to(self.device, tts_pad.dtype)[None]]
        elif req.speaker:
            speaker = [codes(tc.spk_id[req.speaker.lower()])]
        codec_pre = torch.cat([codes(*tags), *speaker, codes(tc.codec_pad_id, tc.codec_bos_id)])  # [C, D]
        n_pre = codec_pre.shape[0]
        parts.append(text(ids["text"][:3]))                                      # <|im_start|>assistant\n
        parts.append(torch.cat([tts_pad.expand(n_pre - 2, -1), tts_bos]) + codec_pre[:-1])

        body = ids["text"][3:-5]
        if req.voice is not None and req.voice.in_context:
            ids["ref"] = self.tensor(self.chat.turn("assistant", req.voice.ref_text))
            txt = torch.cat([text(torch.cat([ids["ref"][3:-2], body])), tts_eos])   # [T1, D]
            ref = req.voice.ref_codes.to(self.device)
            cod = torch.cat([codes(tc.codec_bos_id), t.embed_frame(ref)])           # [T2, D]
            if req.non_streaming_text:
                parts += [txt + codes(*[tc.codec_pad_id] * len(txt)), cod + tts_pad]
                trailing = tts_pad
            elif len(txt) > len(cod):
                parts.append(txt[:len(cod)] + cod)
                trailing = txt[len(cod):]
            else:
                parts.append(torch.cat([txt, tts_pad.expand(len(cod) - len(txt), -1)]) + cod)
                trailing = tts_pad
        elif req.non_streaming_text:
            parts.append(torch.cat([text(body), tts_eos]) + codes(*[tc.codec_pad_id] * (len(body) + 1)))
            parts.append(tts_pad + codec_pre[-1:])
            trailing = tts_pad
        else:
            parts.append(text(body[:1]) + codec_pre[-1:])
            trailing = torch.cat([text(body[1:]), tts_eos])
        return TalkerPrompt(embeds=torch.cat(parts), trailing=trailing, ids=ids)
