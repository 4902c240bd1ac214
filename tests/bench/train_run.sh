#!/usr/bin/env bash
# DAS training-step benchmark, vene against pyvene + PyTorch (CPU), side by side: one step of
# LowRankRotatedSpaceIntervention (rank 16) at the middle layer's block_output, batch 32 x 16
# tokens, cross-entropy at the last position, backward, Adam. Prints the markdown table of
# tests/bench/TRAIN.md.
#
#   tests/bench/train_run.sh [--threads N] [--steps N] [--warmup N] [--only smollm2|gpt2]
#       [--weights as-stored|f32]
#
# --weights is how vene keeps the model's linear weights (the load's weight mode): as-stored,
# the default (SmolLM2's GGUF blocks stay Q4_1; training multiplies by each weight dequantized
# to exact f32 per call), or f32 (dequantized once at load, as PyTorch holds the model).
#
# Models: SmolLM2-135M (the default model's GGUF from the vene cache, fetched if missing, or
# $VENE_MODEL) and a random GPT-2-small-shaped model that make_gpt2_small.py writes to
# $VENE_BENCH_DIR (default ${TMPDIR:-/tmp}/vene-bench). Each engine loads the model once in its
# own process; train_torch.py drives the vene bench in --serve mode so the two alternate step by
# step (the order flips every step) and see the same machine load. The table reports the median
# and minimum over the timed steps and each process's peak RSS (VmHWM). Needs python3 with
# torch, transformers, gguf and pyvene.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=$(nproc)
STEPS=8
WARMUP=2
ONLY=""
WEIGHTS=as-stored
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --weights) WEIGHTS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export VENE_BENCH_WEIGHTS=$WEIGHTS
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
WORK=${VENE_BENCH_DIR:-${TMPDIR:-/tmp}/vene-bench}
mkdir -p "$WORK"
RES="$WORK/train-results-$$.jsonl"
: > "$RES"

echo "== building (release)" >&2
BIN=$(cargo bench --bench train_step --no-run --message-format=json 2>/dev/null | python3 -c "
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m['target']['name'] == 'train_step' and m.get('executable'):
        print(m['executable'])")
[ -x "$BIN" ] || { echo "building the bench failed; run: cargo bench --bench train_step --no-run" >&2; exit 1; }

bench() { # name path
  python3 tests/bench/train_torch.py --vene "$BIN" --model "$2" --name "$1 (vene $WEIGHTS)" --steps "$STEPS" \
    --warmup "$WARMUP" --threads "$THREADS" --out "$RES" 2>&1 \
    | grep -v -e nnsight -e 'de-quantizing' -e Warning >&2 || true
}

if [ "$ONLY" != "gpt2" ]; then
  echo "== SmolLM2-135M" >&2
  SMOL=${VENE_MODEL:-$(./target/release/vene fetch 2>/dev/null || cargo run --release --quiet -- fetch)}
  bench smollm2-135m "$SMOL"
fi
if [ "$ONLY" != "smollm2" ]; then
  echo "== GPT-2 small shape, random weights" >&2
  GPT2="$WORK/gpt2-small-random"
  python3 tests/bench/make_gpt2_small.py "$GPT2" 2>&1 | grep -v nnsight >&2
  bench gpt2-small-random "$GPT2"
fi

python3 - "$RES" "$THREADS" <<'PY'
import json, os, sys, platform, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
threads = sys.argv[2]
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
agg = {}
for r in rows:
    a = agg.setdefault((r["model"], r["engine"]), {"steps": [], "peak": 0, "load": 0, "info": r})
    a["steps"] += r["step_ms"]
    a["peak"] = max(a["peak"], r["peak_rss_kb"])
    a["load"] = max(a["load"], r["rss_after_load_kb"])
print()
print(f"{datetime.date.today()} · {cpu} · {threads} threads · {platform.system()} {platform.machine()} · load average at the end "
      f"{' '.join(f'{l:.2f}' for l in os.getloadavg())}")
print()
print("One DAS step (LowRankRotatedSpace rank 16, middle layer block_output, batch 32 x 16 tokens, "
      "CE at the last position, backward, Adam); the engines alternate step by step. "
      "Milliseconds per step: median (min) over the timed steps.")
print()
print("| model | layer | vene ms/step | pyvene+torch ms/step | vene steps/s | pyvene+torch steps/s | time vene/torch | vene peak RSS MiB | torch peak RSS MiB | vene RSS after load MiB | torch RSS after load MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
models = []
for r in rows:
    if r["model"] not in models:
        models.append(r["model"])
med = lambda xs: sorted(xs)[len(xs) // 2]
for m in models:
    v, t = agg.get((m, "vene")), agg.get((m, "torch"))
    if not v or not t:
        continue
    vm, tm = med(v["steps"]), med(t["steps"])
    print(f"| {m} | {v['info']['layer']} | {vm:.0f} ({min(v['steps']):.0f}) | {tm:.0f} ({min(t['steps']):.0f}) | "
          f"{1e3 / vm:.2f} | {1e3 / tm:.2f} | {vm / tm:.2f} | {v['peak'] / 1024:.0f} | {t['peak'] / 1024:.0f} | "
          f"{v['load'] / 1024:.0f} | {t['load'] / 1024:.0f} |")
print()
for m in models:
    for e in ("vene", "torch"):
        a = agg.get((m, e))
        if a:
            print(f"{m} {e}: loss first/last step {a['info']['loss_first']:.4f} / {a['info']['loss_last']:.4f}")
PY
rm -f "$RES"
