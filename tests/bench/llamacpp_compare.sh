#!/usr/bin/env bash
# Greedy tokens of vene (--weights as-stored and f32) against llama.cpp on the same GGUF files:
# SmolLM2-135M-Instruct Q4_1 (chat prompts) and Gemma-3-270M Q4_K_M (plain completions).
# llama.cpp side: vene-llama-topk (llamacpp_topk.c against libllama), which decodes greedily and
# prints the top-2 logits of each step, so a parted token can be checked for a near tie.
# Writes tests/bench/out/llamacpp_compare.json and tests/bench/llamacpp_reference.json (the llama.cpp
# ids, committed), and prints a summary. Build llama.cpp first: bash tests/bench/llamacpp_build.sh
# Env: VENE (binary), THREADS (default 1), N_PREDICT (default 24).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
vene="${VENE:-$repo/target/release/vene}"
threads="${THREADS:-1}"
n="${N_PREDICT:-24}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.16}"
llama_dir="$here/out/llamacpp/llama_cpp_python-$version/vendor/llama.cpp"
topk="$here/out/llamacpp/build-$version/bin/vene-llama-topk"
[ -x "$topk" ] || { echo "missing $topk: run tests/bench/llamacpp_build.sh" >&2; exit 1; }
smol="$("$vene" fetch)"
gemma="$("$vene" fetch gemma3-270m)"
commit="$(git -C "$llama_dir" rev-parse HEAD 2>/dev/null || echo unknown)"
out="$here/out"
mkdir -p "$out"
rows="$out/llamacpp_compare.jsonl"
: > "$rows"

smol_prompts=(
  "What is the capital of France?"
  "Write a haiku about the sea."
  "How many legs does a spider have?"
  "Give me three tips for sleeping better."
  "Translate 'good morning' into Spanish."
  "What is 12 times 7?"
)
gemma_prompts=(
  "<bos>The Eiffel Tower is in the city of"
  "<bos>The capital of Japan is"
  "<bos>Water boils at a temperature of"
  "<bos>Once upon a time, there was a"
  "<bos>The largest planet in the solar system is"
  "<bos>def fibonacci(n):"
)

# One comparison: label, model file, text for llama.cpp, vene arguments for the prompt.
compare() {
  local label="$1" model="$2" llama_text="$3"
  shift 3
  local llama_json as_stored f32
  llama_json="$("$topk" "$model" "$n" "$threads" "$llama_text")"
  as_stored="$(RAYON_NUM_THREADS=$threads "$vene" generate --model "$model" "$@" \
    --max-new-tokens "$n" --ignore-eos --json --weights as-stored)"
  f32="$(RAYON_NUM_THREADS=$threads "$vene" generate --model "$model" "$@" \
    --max-new-tokens "$n" --ignore-eos --json --weights f32)"
  python3 - "$label" "$llama_text" "$llama_json" "$as_stored" "$f32" >> "$rows" <<'PY'
import json, sys
label, text, llama, as_stored, f32 = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
print(json.dumps({"model": label, "prompt": text, "llama": llama,
                  "vene_as_stored": as_stored, "vene_f32": f32}))
PY
}

for p in "${smol_prompts[@]}"; do
  compare smollm2-135m-instruct-q4_1 "$smol" \
    "<|im_start|>user"$'\n'"$p<|im_end|>"$'\n'"<|im_start|>assistant"$'\n' --chat --prompt "$p"
done
for p in "${gemma_prompts[@]}"; do
  compare gemma-3-270m-q4_k_m "$gemma" "$p" --prompt "$p"
done

VENE_BIN="$vene" SMOL="$smol" GEMMA="$gemma" RAYON_NUM_THREADS="$threads" \
python3 - "$rows" "$out/llamacpp_compare.json" "$here/llamacpp_reference.json" \
  "$version" "$commit" "$threads" "$n" <<'PY'
import json, os, subprocess, sys
rows_path, compare_path, ref_path, version, commit, threads, n = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path)]

def vene_top(model, ids, mode, k=3):
    """vene's own top-k logits after `ids`, from one full forward (`vene run`, no KV cache)."""
    path = os.path.join(os.path.dirname(compare_path), "llamacpp_top_request.json")
    json.dump({"model": model, "base": {"input_ids": [ids]}, "logits": "last"}, open(path, "w"))
    out = subprocess.check_output([os.environ["VENE_BIN"], "run", "--request", path, "--top-k",
                                   str(k), "--json", "--weights", mode])
    return [[t["id"], round(t["logit"], 4)] for t in json.loads(out)["top_k"]["intervened"][0]]

def parted(ref, ids):
    for i, (a, b) in enumerate(zip(ref, ids)):
        if a != b:
            return i
    return None

summary, reference = [], []
for r in rows:
    steps = r["llama"]["steps"]
    llama_ids = [s[0] for s in steps]
    entry = {"model": r["model"], "prompt": r["prompt"],
             "prompt_ids": r["llama"]["prompt_ids"], "ids": llama_ids,
             "top2": [[s[0], s[1], s[2], s[3]] for s in steps]}
    reference.append(entry)
    line = {"model": r["model"], "prompt": r["prompt"]}
    for mode in ("vene_as_stored", "vene_f32"):
        v = r[mode]
        same_prompt = v["prompt_ids"] == r["llama"]["prompt_ids"]
        at = parted(llama_ids, v["ids"])
        info = {"prompt_ids_equal": same_prompt, "parted_at": at, "ids": v["ids"]}
        if not same_prompt:
            info["vene_prompt_ids"] = v["prompt_ids"]
        if at is not None:
            s = steps[at]
            info["llama_top2_at_part"] = {"top": s[0], "top_logit": s[1], "second": s[2],
                                          "second_logit": s[3], "gap": round(s[1] - s[3], 4)}
            info["vene_token_at_part"] = v["ids"][at]
            model = os.environ["SMOL"] if r["model"].startswith("smollm2") else os.environ["GEMMA"]
            prefix = r["llama"]["prompt_ids"] + llama_ids[:at]
            info["vene_top3_full_forward_at_part"] = vene_top(
                model, prefix, "as-stored" if mode == "vene_as_stored" else "f32")
        line[mode] = info
    summary.append(line)

json.dump(summary, open(compare_path, "w"), indent=1)
header = {"source": f"llama-cpp-python=={version} sdist (PyPI), vendor/llama.cpp",
          "commit": commit,
          "build": "bash tests/bench/llamacpp_build.sh",
          "decoder": "tests/bench/llamacpp_topk.c: greedy argmax, no BOS added, special tokens "
                     "parsed; top2 per step = [id, logit, runner-up id, logit]",
          "command": f"THREADS={threads} N_PREDICT={n} bash tests/bench/llamacpp_compare.sh",
          "threads": int(threads), "n_predict": int(n)}
# One prompt per line keeps the file short and its diffs readable.
with open(ref_path, "w") as f:
    f.write('{"llama_cpp": ' + json.dumps(header, indent=1) + ',\n "prompts": [\n')
    f.write(",\n".join("  " + json.dumps(e) for e in reference))
    f.write("\n ]}\n")
print("model | prompt | prompt ids equal (as-stored/f32) | as-stored parts at | f32 parts at | llama top-2 gap at part")
for l in summary:
    a, f = l["vene_as_stored"], l["vene_f32"]
    gaps = []
    for k, m in (("as-stored", a), ("f32", f)):
        if m["parted_at"] is not None:
            t = m["llama_top2_at_part"]
            gaps.append(f"{k}: step {m['parted_at']} llama {t['top']} ({t['top_logit']:.3f}) vs "
                        f"{t['second']} ({t['second_logit']:.3f}) gap {t['gap']:.3f}, vene took {m['vene_token_at_part']}"
                        f" (vene full-forward top-3 {m['vene_top3_full_forward_at_part']})")
    print(f"{l['model']} | {l['prompt']!r} | {a['prompt_ids_equal']}/{f['prompt_ids_equal']} | "
          f"{a['parted_at'] if a['parted_at'] is not None else '-'} | "
          f"{f['parted_at'] if f['parted_at'] is not None else '-'} | {'; '.join(gaps) or '-'}")
PY
