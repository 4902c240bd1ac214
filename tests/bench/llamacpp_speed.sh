#!/usr/bin/env bash
# Prompt and generation tokens/s, llama.cpp (llama-bench -p 64 -n 32) against vene (as-stored and
# f32 weights), on SmolLM2-135M-Instruct Q4_1 and Gemma-3-270M Q4_K_M, at 1 and 2 threads, one run.
# vene prompt tokens/s: 64 / median time of one 64-token forward with last-position logits
# (`vene run --repeat`, model loaded once). vene generation tokens/s: `vene generate` prints no
# timings, so 32 / (C - B), the wall-clock difference of two runs (each the best of REPEATS):
#   B: 64 prompt tokens, 1 new token    C: 64 prompt tokens, 33 new tokens (--ignore-eos)
# so load time, process start and the prompt cancel out. Build llama.cpp first: bash tests/bench/llamacpp_build.sh
# Env: VENE (binary), REPEATS (default 3). Writes tests/bench/out/llamacpp_speed.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
vene="${VENE:-$repo/target/release/vene}"
repeats="${REPEATS:-3}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.16}"
bench="$here/out/llamacpp/build-$version/bin/llama-bench"
[ -x "$bench" ] || { echo "missing $bench: run tests/bench/llamacpp_build.sh" >&2; exit 1; }
out="$here/out/llamacpp_speed.md"

ids64="$(seq -s, 300 363)"
# Best wall time (seconds) of REPEATS runs of a command.
best_time() {
  local best="" t0 t1 dt
  for _ in $(seq "$repeats"); do
    t0=$(date +%s.%N)
    "$@" > /dev/null
    t1=$(date +%s.%N)
    dt=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$dt < $best" | bc -l)" = 1 ]; then best=$dt; fi
  done
  echo "$best"
}

{
  echo "| model | engine | weights | threads | prompt tok/s (64) | generation tok/s (32) |"
  echo "|---|---|---|---|---|---|"
} > "$out"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for name in default gemma3-270m; do
  if [ "$name" = default ]; then model="$("$vene" fetch)"; label="SmolLM2-135M Q4_1"
  else model="$("$vene" fetch gemma3-270m)"; label="Gemma-3-270M Q4_K_M"; fi
  for t in 1 2; do
    json="$("$bench" -m "$model" -p 64 -n 32 -t "$t" -r "$repeats" -o json 2>/dev/null)"
    python3 - "$label" "$t" "$json" >> "$out" <<'PY'
import json, sys
label, t, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
print(f"| {label} | llama.cpp | as stored | {t} | {pp:.1f} | {tg:.1f} |")
PY
    for w in as-stored f32; do
      run() { RAYON_NUM_THREADS=$t "$vene" generate --model "$model" --weights "$w" --json "$@"; }
      # The weight mode goes in the request: `vene run` loads as the request's model_options say.
      python3 -c 'import json, sys; json.dump({"model": sys.argv[1], "model_options": {"weights": sys.argv[3]}, "base": {"input_ids": [list(range(300, 364))]}, "logits": "last"}, open(sys.argv[2], "w"))' "$model" "$here/out/llamacpp_prompt_request.json" "$w"
      ms=$(RAYON_NUM_THREADS=$t "$vene" run --request "$here/out/llamacpp_prompt_request.json" \
        --json --repeat 5 | tail -1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["median_ms"])')
      b=$(best_time run --ids "$ids64" --max-new-tokens 1)
      c=$(best_time run --ids "$ids64" --max-new-tokens 33 --ignore-eos)
      pp=$(echo "64000 / $ms" | bc -l)
      tg=$(echo "32 / ($c - $b)" | bc -l)
      printf '| %s | vene | %s | %s | %.1f | %.1f |\n' "$label" "$w" "$t" "$pp" "$tg" >> "$out"
      printf '%s %s t=%s: prompt forward %.1f ms, B=%.3fs C=%.3fs\n' "$label" "$w" "$t" "$ms" "$b" "$c" >&2
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cat "$out"
