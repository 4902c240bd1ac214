#!/usr/bin/env python3
"""SentencePiece-style GGUF tokenizer fixtures (read by tests/gguf_tokenizer.rs).

How to run (from the repository root, with the oracle venv: sentencepiece, gguf, transformers):

    /work/venv-oracle/bin/python tests/oracle/make_spm_fixtures.py

The `sentencepiece` package trains two small BPE models with byte fallback on a multilingual
corpus written here, one in Llama 2's style (a dummy space prefix) and one in Gemma's (none,
whitespace-only pieces allowed). Each vocabulary is written as llama.cpp's converter writes it
(`tokenizer.ggml.model = llama`: tokens, scores, token types, bos/eos/unk ids, add_bos and
add_space_prefix flags) into tests/fixtures/gguf/tokenizer/spm_<style>.gguf, a GGUF with no
tensors. The expected ids of TEXTS are sentencepiece's own encoding; for the Llama-style file
transformers' GGUF tokenizer (a BPE built from the GGUF) is checked to agree.

Writes tests/fixtures/gguf/tokenizer/spm_<style>.gguf and expected.json.
"""

import json
import random
import sys
from pathlib import Path

import sentencepiece as spm

import gguf

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/gguf/tokenizer"

# The texts the Rust test encodes: English, accents, CJK, emoji, digits, leading, trailing and
# repeated spaces, newlines and tabs, and characters outside the vocabulary (byte fallback).
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café, São Paulo, Zürich, façade",
    "東京は日本の首都です。",
    "emoji 🤖🎉 and ✓",
    "In 1492, Columbus sailed 3,000 miles.",
    " leading space",
    "trailing spaces   ",
    "multiple     spaces  between",
    "new\nlines\n\nand\ttabs",
    "unknown: ☃ ǅ ꙮ 𝄞",
    "",
    " ",
    "mixed 日本 text with ünïcödé 42",
]

WORDS = (
    "the of and to in is was for on that with as by at from his her they this which "
    "world hello quick brown fox jumps over lazy dog columbus sailed miles year people "
    "naïve café são paulo zürich façade élève über straße "
    "東京 日本 首都 です 東 京 日 本 は の "
    "0 1 2 3 4 5 6 7 8 9 10 42 1492 2024 "
).split()


def corpus(path):
    rng = random.Random(7)
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        words = [rng.choice(WORDS) for _ in range(n)]
        sep = rng.choice([" ", " ", " ", "  ", "   "])
        lines.append(sep.join(words))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


STYLES = {
    # Llama 2: "▁" prepended to the text, whitespace splits pieces.
    "llama": dict(add_dummy_prefix=True, split_by_whitespace=True, allow_whitespace_only_pieces=False),
    # Gemma: no prefix, pieces may span and repeat whitespace.
    "gemma": dict(add_dummy_prefix=False, split_by_whitespace=False, allow_whitespace_only_pieces=True),
}


def train(style, corpus_path):
    prefix = OUT / f"_spm_{style}"
    opts = STYLES[style]
    spm.SentencePieceTrainer.train(
        input=str(corpus_path),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=420,
        character_coverage=0.995,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        unk_id=3,
        bos_id=2,
        eos_id=1,
        pad_id=0,
        minloglevel=2,
        **opts,
    )
    model = Path(f"{prefix}.model")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    return sp, model


def write_gguf(style, sp):
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            t = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            t = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        elif tokens[-1] in ("<start_of_turn>", "<end_of_turn>"):
            t = gguf.TokenType.USER_DEFINED
        else:
            t = gguf.TokenType.NORMAL
        types.append(t)
    path = OUT / f"spm_{style}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"vene spm {style} tokenizer")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_pad_token_id(sp.pad_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(STYLES[style]["add_dummy_prefix"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def transformers_ids(path, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    corpus_path = OUT / "_corpus.txt"
    corpus(corpus_path)
    expected = {"texts": TEXTS}
    for style in STYLES:
        sp, model = train(style, corpus_path)
        path = write_gguf(style, sp)
        ids = [sp.encode(t) for t in TEXTS]
        assert any(
            sp.is_byte(i) for row in ids for i in row
        ), f"{style}: no text needed byte fallback"
        expected[style] = {
            "ids": ids,
            "pieces": [[sp.id_to_piece(i) for i in row] for row in ids],
            "bos": sp.bos_id(),
        }
        if style == "llama":
            hf = transformers_ids(path, TEXTS)
            for t, a, b in zip(TEXTS, ids, hf):
                if a != b:
                    sys.exit(f"transformers and sentencepiece disagree on {t!r}: {b} vs {a}")
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
        model.unlink()
        Path(str(model)[: -len(".model")] + ".vocab").unlink()
    corpus_path.unlink()
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
