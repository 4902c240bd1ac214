"""The PyTorch side of the forward benchmark: Hugging Face transformers on CPU, the same
shapes, the same deterministic token ids and the same thread count as tests/bench/forward.rs.

    python3 tests/bench/torch_forward.py --model PATH [--name NAME] [--shapes 1x16,8x64]
        [--threads N] [--iters N] [--warmup N] [--out FILE.jsonl] [--vene BENCH_BINARY]

PATH is a Hugging Face directory or a GGUF file (transformers dequantizes it to f32, as vene
does). The model runs in eval mode under torch.inference_mode(), with use_cache=False, logits
for every position (transformers' default) and its default attention implementation (sdpa).

With --vene, the vene bench binary is started in --serve mode on the same model and the two
engines alternate forward by forward (vene without hooks, vene with a no-op hook at one site,
vene with a no-op hook at every site, torch; the order rotates each round), so both see the
same machine load, which matters on a small shared machine. Each engine times its own
forwards (Instant / perf_counter around the call). Without --model, vene fetches the default
model and torch uses the file vene reports.
"""

import argparse
import json
import os
import subprocess
import sys
import time

VENE_VARIANTS = ["nohooks", "noop_one_site", "noop_all_sites"]


def proc_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def cpu_jiffies(pids):
    """(busy jiffies of the whole machine, jiffies used by `pids`, total jiffies)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    total = sum(v)
    busy = total - v[3] - v[4]
    ours = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ours += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return busy, ours, total


def other_cores(before, after):
    """Cores' worth of CPU that processes other than ours used between two readings."""
    busy = after[0] - before[0]
    ours = after[1] - before[1]
    total = after[2] - before[2]
    return max(0.0, (busy - ours) / total * os.cpu_count()) if total else 0.0


def wait_idle(minutes, pids):
    """Waits until other processes have used under 0.1 core for three 2-second samples."""
    if not minutes:
        return
    deadline = time.time() + 60 * minutes
    quiet = 0
    while time.time() < deadline:
        a = cpu_jiffies(pids)
        time.sleep(2)
        quiet = quiet + 1 if other_cores(a, cpu_jiffies(pids)) < 0.1 else 0
        if quiet >= 3:
            return
    print(f"  (the machine did not go idle within {minutes} minutes; measuring anyway)")


def ids_for(b, s, vocab):
    import torch

    return torch.tensor([(i * 2654435761 + 12345) % vocab for i in range(b * s)],
                        dtype=torch.long).reshape(b, s)


class Vene:
    """The vene bench binary in --serve mode."""

    def __init__(self, binary, model, name, threads):
        cmd = [binary, "--serve", "--name", name]
        if model:
            cmd += ["--model", model]
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env)
        self.info = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            sys.exit("the vene bench process ended early")
        return json.loads(line)

    def run(self, variant, b, s):
        self.p.stdin.write(f"run {variant} {b} {s}\n")
        self.p.stdin.flush()
        r = self._read()
        return r["ms"], r["check"]

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        info = self._read()
        self.p.wait()
        return info


def stats(xs):
    xs = sorted(xs)
    n = len(xs)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return med, xs[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--name")
    ap.add_argument("--shapes", default="1x16,8x64")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--out")
    ap.add_argument("--vene", help="path of the vene forward bench binary; alternate with it")
    ap.add_argument("--wait-idle", type=float, default=0,
                    help="before each shape, wait up to this many minutes for an idle machine")
    a = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(a.threads))
    vene = None
    model_path = a.model
    name = a.name or (os.path.basename(a.model.rstrip("/")) if a.model else "default")
    if a.vene:
        vene = Vene(a.vene, a.model, name, a.threads)
        model_path = model_path or vene.info["path"]
        print(f"vene {name}: {vene.info['n_params']} params, load {vene.info['load_ms']:.0f} ms, "
              f"{vene.info['threads']} threads")
    if not model_path:
        sys.exit("--model is needed without --vene")

    import torch

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    t0 = time.perf_counter()
    if os.path.isfile(model_path):
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(model_path) or ".", gguf_file=os.path.basename(model_path),
            torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32)
    model.eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = proc_kb("VmRSS:")
    vocab = model.config.vocab_size
    attn = getattr(model.config, "_attn_implementation", "?")
    print(f"torch {name}: {model.config.num_hidden_layers} layers, "
          f"{sum(p.numel() for p in model.parameters())} params, load {load_ms:.0f} ms, "
          f"{torch.get_num_threads()} threads, attention {attn}, torch {torch.__version__}")

    def torch_run(b, s):
        ids = ids_for(b, s, vocab)
        with torch.inference_mode():
            t = time.perf_counter()
            logits = model(input_ids=ids, use_cache=False).logits
            ms = (time.perf_counter() - t) * 1e3
        return ms, float(logits[0, s - 1].sum())

    runners = [("torch", "torch", torch_run)]
    if vene:
        runners = [("vene", v, (lambda v: lambda b, s: vene.run(v, b, s))(v))
                   for v in VENE_VARIANTS] + runners
    out = open(a.out, "a") if a.out else None
    for shape in a.shapes.split(","):
        b, s = (int(x) for x in shape.split("x"))
        small = b * s <= 64
        warmup = a.warmup if a.warmup is not None else (3 if small else 1)
        iters = a.iters if a.iters is not None else (20 if small else 10)
        times = {v: [] for _, v, _ in runners}
        checks = {}
        pids = [os.getpid()] + ([vene.p.pid] if vene else [])
        wait_idle(a.wait_idle, pids)
        cpu_before = cpu_jiffies(pids)
        for r in range(warmup + iters):
            k = r % len(runners)
            for engine, variant, fn in runners[k:] + runners[:k]:
                ms, check = fn(b, s)
                checks[variant] = check
                if r >= warmup:
                    times[variant].append(ms)
        other = other_cores(cpu_before, cpu_jiffies(pids))
        for engine, variant, _ in runners:
            med, mn = stats(times[variant])
            print(f"  {b}x{s:<4} {engine:<5} {variant:<15} median {med:9.2f} ms  min {mn:9.2f} ms"
                  f"  ({iters} runs)  check {checks[variant]:.3f}")
            if out:
                out.write(json.dumps({
                    "engine": engine, "model": name, "shape": f"{b}x{s}", "variant": variant,
                    "median_ms": med, "min_ms": mn, "iters": iters, "threads": a.threads,
                    "check": checks[variant], "other_cores": other}) + "\n")
        print(f"  other processes used {other:.2f} cores meanwhile")
    summaries = [{"engine": "torch", "model": name, "peak_rss_kb": proc_kb("VmHWM:"),
                  "rss_after_load_kb": rss_after_load, "load_ms": load_ms,
                  "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "attention": attn}]
    if vene:
        summaries.append(vene.close())
    for sm in summaries:
        print(f"  {sm['engine']}: peak RSS {sm['peak_rss_kb'] / 1024:.0f} MiB "
              f"(after load {sm['rss_after_load_kb'] / 1024:.0f} MiB)")
        if out:
            out.write(json.dumps(sm) + "\n")
    if out:
        out.close()


if __name__ == "__main__":
    main()
