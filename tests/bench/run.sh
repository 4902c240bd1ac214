#!/usr/bin/env bash
# Forward benchmark, vene against Hugging Face transformers (PyTorch, CPU), side by side in one
# run with the same thread count. Prints a markdown table of median ms per forward, the
# vene/torch ratio, the cost of no-op hooks, and peak RSS per process.
#
#   tests/bench/run.sh [--threads N] [--iters N] [--shapes 1x16,8x64] [--only smollm2|gpt2]
#                      [--wait-idle MINUTES] [--priority]
#
# --wait-idle: before each shape, wait (up to MINUTES) until the CPUs have been idle for a few
# seconds, since other work on a small machine distorts the timings (OpenMP's barriers in
# PyTorch suffer most). The table reports how many cores other processes used meanwhile.
# --priority: run the whole benchmark (both engines alike) in its own scheduler autogroup with
# nice -15 (needs root or CAP_SYS_NICE), so concurrent builds on a shared machine take little
# CPU from it; with autogroups on, plain `nice` does not reach across sessions.
#
# Models: (a) the default model SmolLM2-135M (GGUF from the vene cache, fetched if missing;
# or $VENE_MODEL), (b) a random GPT-2-small-shaped model that make_gpt2_small.py writes to
# $VENE_BENCH_DIR (default: ${TMPDIR:-/tmp}/vene-bench), reused across runs, never committed.
# Needs python3 with torch, transformers and gguf.
set -euo pipefail
ARGS=("$@")
SELF=$(realpath "$0")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=$(nproc)
EXTRA=()
ONLY=""
WAIT_IDLE=0
PRIORITY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --iters) EXTRA+=(--iters "$2"); shift 2 ;;
    --shapes) EXTRA+=(--shapes "$2"); shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --wait-idle) WAIT_IDLE=$2; shift 2 ;;
    --priority) PRIORITY=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$PRIORITY" = 1 ] && [ -z "${VENE_BENCH_BOOSTED:-}" ]; then
  export VENE_BENCH_BOOSTED=1
  exec setsid -w bash -c 'if echo -15 > /proc/self/autogroup 2>/dev/null; then
      echo "== priority: $(cat /proc/self/autogroup)" >&2
    else echo "== cannot raise the priority; measuring at normal priority" >&2; fi
    exec "$0" "$@"' "$SELF" "${ARGS[@]}"
fi
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
WORK=${VENE_BENCH_DIR:-${TMPDIR:-/tmp}/vene-bench}
mkdir -p "$WORK"
RES="$WORK/results-$$.jsonl"
: > "$RES"

# $VENE_BENCH_BIN: an already built bench binary (skips the build).
BIN=${VENE_BENCH_BIN:-}
[ -n "$BIN" ] || echo "== building the bench (release)" >&2
[ -n "$BIN" ] || BIN=$(cargo bench --bench forward --no-run --message-format=json 2>/dev/null | python3 -c "
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m['target']['name'] == 'forward' and m.get('executable'):
        print(m['executable'])")
[ -x "$BIN" ] || { echo "building the bench failed; run: cargo bench --bench forward --no-run" >&2; exit 1; }

compare() { python3 tests/bench/torch_forward.py --vene "$BIN" --threads "$THREADS" --wait-idle "$WAIT_IDLE" --out "$RES" "${EXTRA[@]}" "$@" 2>&1 | grep -v -e nnsight -e 'de-quantizing'; }

if [ "$ONLY" != "gpt2" ]; then
  echo "== SmolLM2-135M (default model)" >&2
  if [ -n "${VENE_MODEL:-}" ]; then compare --model "$VENE_MODEL" --name smollm2-135m
  else compare --name smollm2-135m; fi
fi
if [ "$ONLY" != "smollm2" ]; then
  echo "== GPT-2 small shape, random weights" >&2
  GPT2="$WORK/gpt2-small-random"
  python3 tests/bench/make_gpt2_small.py "$GPT2" 2>&1 | grep -v nnsight >&2
  compare --model "$GPT2" --name gpt2-small-random
fi

python3 - "$RES" "$THREADS" <<'PY'
import json, sys, platform, datetime, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
threads = sys.argv[2]
t = {}
rss = {}
for r in rows:
    if "peak_rss_kb" in r:
        rss[(r["engine"], r["model"])] = r
    else:
        t[(r["model"], r["shape"], r["variant"])] = r
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
print()
print(f"{datetime.date.today()} · {cpu} · {threads} threads · {platform.system()} {platform.machine()}")
print()
print("Median ms per forward (min in parentheses); engines alternate forward by forward.")
print()
print("| model | shape | vene ms | torch ms | vene/torch | vene + no-op hook, 1 site | vene + no-op hook, all sites | other load (cores) | check vene / torch |")
print("|---|---|---:|---:|---:|---:|---:|---|---|")
models = []
for r in rows:
    if r["model"] not in models: models.append(r["model"])
for m in models:
    shapes = []
    for (mm, s, v) in t:
        if mm == m and s not in shapes: shapes.append(s)
    for s in shapes:
        g = lambda v: t.get((m, s, v))
        v0, v1, va, th = g("nohooks"), g("noop_one_site"), g("noop_all_sites"), g("torch")
        if not v0: continue
        ratio = f"{v0['median_ms'] / th['median_ms']:.2f}" if th else "-"
        tms = f"{th['median_ms']:.1f} ({th['min_ms']:.1f})" if th else "-"
        vms = f"{v0['median_ms']:.1f} ({v0['min_ms']:.1f})"
        la = v0.get("other_cores")
        la = f"{la:.2f}" if la is not None else "-"
        pct = lambda x: f"{x['median_ms']:.1f} ({(x['median_ms'] / v0['median_ms'] - 1) * 100:+.1f}%)" if x else "-"
        chk = f"{v0['check']:.3f} / {th['check']:.3f}" if th else "-"
        print(f"| {m} | {s} | {vms} | {tms} | {ratio} | {pct(v1)} | {pct(va)} | {la} | {chk} |")
print()
print("| model | engine | load ms | RSS after load MiB | peak RSS MiB |")
print("|---|---|---:|---:|---:|")
for m in models:
    for e in ("vene", "torch"):
        r = rss.get((e, m))
        if r:
            print(f"| {m} | {e} | {r['load_ms']:.0f} | {r['rss_after_load_kb'] / 1024:.0f} | {r['peak_rss_kb'] / 1024:.0f} |")
PY
rm -f "$RES"
