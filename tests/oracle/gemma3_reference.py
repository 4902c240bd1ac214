#!/usr/bin/env python3
"""Reference outputs for tests/gemma3_real.rs: Gemma-3-270M (Q4_K_M GGUF from PyPI).

Usage (the oracle venv with a transformers that has Gemma 3, >= 4.50, e.g. 4.51.3 on
PYTHONPATH; gguf, sentencepiece, torch; CPU, about a minute):

    PYTHONPATH=/work/tf-new /work/venv-oracle/bin/python tests/oracle/gemma3_reference.py [GGUF]

Without an argument the file is looked up in $VENE_CACHE (default ~/.cache/vene), where
`vene fetch gemma3-270m` puts it. Writes tests/fixtures/gemma3/reference.json (token ids and
logits only; the weights are never committed: Gemma Terms of Use).

Independent of vene's loader and tokenizer:
  tokenizer  The `sentencepiece` library encodes with a BPE model built from the GGUF's own
             vocabulary (pieces, scores, types; identity normalization, no dummy prefix, byte
             fallback; user-defined pieces with "▁" again where llama.cpp wrote spaces), which
             is the algorithm llama.cpp's "llama" vocabulary type follows.
             (transformers 4.51.3 cannot read a gemma3 GGUF, and its Gemma GGUF tokenizer is a
             Unigram model, another algorithm.)
  model      gguf-py reads and dequantizes every tensor (numpy); names go back to Hugging
             Face's through gguf-py's own name map, the norm weights lose llama.cpp's +1; the
             weights are loaded into transformers' Gemma3ForCausalLM (eager attention, f32),
             whose logits and greedy continuations are recorded.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
OUT = ROOT / "tests/fixtures/gemma3/reference.json"

TOKENIZE_TEXTS = [
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
    "unknown bytes: \u0378 \U000e0100 ꙮ 𝄞",
    "x = f(12345) + y_2; // code",
    "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم",
]
# Greedy continuations; each prompt starts with <bos> as Gemma expects.
PROMPTS = {
    "france": "<bos>The capital of France is",
    "counting": "<bos>1, 2, 3, 4, 5,",
    "germany": "<bos>Berlin is the capital of",
    "eiffel": "<bos>The Eiffel Tower is in the city of",
}
NEW_TOKENS = 8
TOP_K = 20


def field(reader, key):
    f = reader.fields[key]
    return [f.contents(i) for i in range(len(f.data))] if f.types[0] == gguf.GGUFValueType.ARRAY else f.contents()


def sp_from_gguf(reader):
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    m = pb.ModelProto()
    kind = {
        1: pb.ModelProto.SentencePiece.NORMAL,
        2: pb.ModelProto.SentencePiece.UNKNOWN,
        3: pb.ModelProto.SentencePiece.CONTROL,
        4: pb.ModelProto.SentencePiece.USER_DEFINED,
        5: pb.ModelProto.SentencePiece.UNUSED,
        6: pb.ModelProto.SentencePiece.BYTE,
    }
    for t, s, k in zip(tokens, scores, types):
        p = m.pieces.add()
        # llama.cpp's converter stores user-defined pieces with real spaces (so its tokenizer
        # can match them in raw text); sentencepiece's model has them with "▁".
        p.piece = t.replace(" ", "\u2581") if int(k) == 4 else t
        p.score = float(s)
        p.type = kind[int(k)]
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    for kind in ["unk", "bos", "eos", "pad"]:
        key = "unknown" if kind == "unk" else ("padding" if kind == "pad" else kind)
        i = int(reader.fields[f"tokenizer.ggml.{key}_token_id"].contents())
        setattr(m.trainer_spec, f"{kind}_id", i)
        setattr(m.trainer_spec, f"{kind}_piece", tokens[i])
    m.trainer_spec.split_by_whitespace = False
    m.trainer_spec.allow_whitespace_only_pieces = True
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(reader.fields["tokenizer.ggml.add_space_prefix"].contents())
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def encode_prompt(sp, text):
    """<bos> + sentencepiece ids of the rest (the prompt's only special token)."""
    assert text.startswith("<bos>")
    return [sp.bos_id()] + sp.encode(text[len("<bos>"):])


def hf_model(reader):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    meta = lambda k: reader.fields[f"gemma3.{k}"].contents()
    n_layers = int(meta("block_count"))
    cfg = Gemma3TextConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=int(meta("embedding_length")),
        intermediate_size=int(meta("feed_forward_length")),
        num_hidden_layers=n_layers,
        num_attention_heads=int(meta("attention.head_count")),
        num_key_value_heads=int(meta("attention.head_count_kv")),
        head_dim=int(meta("attention.key_length")),
        rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta("rope.freq_base")),
        rope_local_base_freq=10000.0,
        sliding_window=int(meta("attention.sliding_window")),
        sliding_window_pattern=6,
        query_pre_attn_scalar=int(meta("attention.key_length")),
        max_position_embeddings=int(meta("context_length")),
        hidden_activation="gelu_pytorch_tanh",
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        rope_scaling=None,
        tie_word_embeddings=True,
        attn_implementation="eager",
        torch_dtype=torch.float32,
    )
    model = Gemma3ForCausalLM(cfg).eval()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, n_layers)
    tensors = {t.name: t for t in reader.tensors}
    sd = {}
    for key, param in model.state_dict().items():
        if key == "lm_head.weight":
            continue
        g = names.get_name(key, try_suffixes=(".weight", ".bias"))
        t = tensors[g]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape(param.shape)
        if key.endswith("norm.weight"):
            w = w - 1.0
        sd[key] = torch.from_numpy(np.ascontiguousarray(w))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert set(missing) <= {"lm_head.weight"}, missing
    assert not unexpected, unexpected
    model.tie_weights()
    return model


def main():
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
    else:
        cache = os.environ.get("VENE_CACHE") or os.path.expanduser("~/.cache/vene")
        path = Path(cache) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path}: not found (run `vene fetch gemma3-270m` first)")
    reader = gguf.GGUFReader(str(path))
    sp = sp_from_gguf(reader)
    ref = {
        "tokenize": [{"text": t, "ids": sp.encode(t)} for t in TOKENIZE_TEXTS],
        "prompts": {},
    }
    torch.manual_seed(0)
    model = hf_model(reader)
    eos = int(reader.fields["tokenizer.ggml.eos_token_id"].contents())
    for name, text in PROMPTS.items():
        ids = encode_prompt(sp, text)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        top = torch.topk(logits, TOP_K)
        seq = list(ids)
        for _ in range(NEW_TOKENS):
            with torch.no_grad():
                nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == eos:
                break
        ref["prompts"][name] = {
            "text": text,
            "ids": ids,
            "top_ids": top.indices.tolist(),
            "top_logits": top.values.tolist(),
            "greedy": seq[len(ids):],
            "greedy_text": sp.decode(seq[len(ids):]),
        }
        print(f"{name}: {text!r} -> {ref['prompts'][name]['greedy_text']!r}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(ref, ensure_ascii=False, indent=1))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
