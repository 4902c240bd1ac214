"""Reference outputs for tests/smollm2.rs, computed by Hugging Face transformers from the GGUF.

transformers reads and dequantizes the GGUF file itself (through the `gguf` package) and undoes
llama.cpp's Q/K row permutation on its own, so it is an independent oracle for vene's GGUF
loader, dequantization, un-permutation and tokenizer.

Usage (transformers 4.51.3, torch 2.5.1, gguf installed; CPU is fine):

    python3 tests/oracle/smollm2_reference.py [PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf]

Without an argument the file is looked up in $VENE_CACHE (default ~/.cache/vene), where
`vene::fetch::default_model` puts it. Writes tests/fixtures/smollm2/reference.json.
"""

import json
import os
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_PROMPT = (
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)
PLAIN_PROMPT = "In 1492, Columbus sailed across the"
# Texts whose token ids the Rust tokenizer must reproduce (digits, spaces, unicode, specials).
TOKENIZE_TEXTS = [
    "Hello world",
    "In 1492, Columbus sailed 3,000 miles.",
    "  leading spaces and\ttabs\nnew lines\n\n",
    "naïve café — 東京 🤖 emoji",
    "x = f(12345) + y_2; // code",
    "<|im_start|>system\nYou are SmolLM.<|im_end|>\n<|endoftext|>",
    "I'm sure you've done it, they'll say.",
]
TOP_K = 20
NEW_TOKENS = 12


def main():
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
    else:
        cache = os.environ.get("VENE_CACHE") or os.path.expanduser("~/.cache/vene")
        path = Path(cache) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path}: not found (run `cargo test --release --test smollm2` once to fetch it)")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, torch_dtype=torch.float32
    )
    model.eval()
    eos = tok.convert_tokens_to_ids("<|im_end|>")

    prompts = []
    for name, text in [("chat", CHAT_PROMPT), ("plain", PLAIN_PROMPT)]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        top = torch.topk(logits, TOP_K)
        # Greedy decoding, one full forward per step (what the Rust test does).
        seq = list(ids)
        new = []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
                new.append(nxt)
                seq.append(nxt)
                if nxt == eos:
                    break
        prompts.append(
            {
                "name": name,
                "text": text,
                "input_ids": ids,
                "top_ids": [int(i) for i in top.indices],
                "top_logits": [float(v) for v in top.values],
                "last_logits_mean": float(logits.mean()),
                "last_logits_std": float(logits.std()),
                "greedy_ids": new,
                "greedy_text": tok.decode(new),
            }
        )

    tokenized = []
    for text in TOKENIZE_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokenized.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})

    out = {
        "generated_by": "tests/oracle/smollm2_reference.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf_file": GGUF_NAME,
        "gguf_bytes": path.stat().st_size,
        "dtype": "float32",
        "top_k": TOP_K,
        "eos_id": eos,
        "prompts": prompts,
        "tokenized": tokenized,
    }
    dest = Path(__file__).resolve().parent.parent / "fixtures" / "smollm2" / "reference.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dest}")
    for p in prompts:
        print(p["name"], p["input_ids"], "->", repr(p["greedy_text"]))


if __name__ == "__main__":
    main()
