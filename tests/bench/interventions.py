"""Intervention benchmark: vene (`vene run --repeat`) against pyvene 0.1.8 + PyTorch on the
same model and the same requests, side by side in one run with the same thread count.

    python3 tests/bench/interventions.py [--threads N] [--iters N] [--only smollm2|gpt2] [--out FILE]
                                         [--device cpu|cuda:0]

--device runs both on that device (vene built with --features cuda; VENE_BIN names a vene binary
built beforehand, else cargo builds one).

Requests: an interchange of block_output at the middle layer, last position, one source, at
batch 1, 8 and 32 with 16 and 64 tokens; and 32 greedily generated tokens with a steering
Addition at the middle layer on every decoding step. Models: SmolLM2-135M-Instruct (the default
model; pyvene gets the same dequantized weights through transformers' GGUF loader) and a random
GPT-2-small-shaped model (tests/bench/make_gpt2_small.py). Needs torch, transformers, gguf and
pyvene (pip). Prints a markdown table and, with --out, writes it to a file.
"""

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vene_bin():
    if os.environ.get("VENE_BIN"):
        return os.environ["VENE_BIN"]
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "vene")


def requests_for(model_path, n_layers, hidden, vocab, shapes, seed=0):
    rnd = random.Random(seed)
    mid = n_layers // 2
    out = []
    for b, s in shapes:
        ids = [[rnd.randrange(100, vocab - 1) for _ in range(s)] for _ in range(b)]
        src = [[rnd.randrange(100, vocab - 1) for _ in range(s)] for _ in range(b)]
        out.append((f"interchange b{b} x {s}", {
            "model": model_path,
            "config": {"representations": [{"layer": mid, "component": "block_output"}]},
            "base": {"input_ids": ids},
            "sources": [{"input_ids": src}],
            "unit_locations": {"sources->base": s - 1},
        }))
    prompt = [[rnd.randrange(100, vocab - 1) for _ in range(16)]]
    out.append(("steer + generate 32", {
        "model": model_path,
        "config": {"representations": [{"layer": mid, "component": "block_output",
                                         "intervention_type": "AdditionIntervention"}]},
        "base": {"input_ids": prompt},
        "unit_locations": {"base": 0},
        "tensors": "steer.safetensors",
        "source_representations": "steer",
        "generate": {"max_new_tokens": 32, "do_sample": False, "intervene_on_prompt": False},
    }))
    return out, mid


def run_vene(binary, req, work, iters, device):
    path = os.path.join(work, "req.json")
    with open(path, "w") as f:
        json.dump(req, f)
    # GNU time reports the peak resident set of the whole process (NaN where it is missing).
    gnu_time = os.path.exists("/usr/bin/time")
    cmd = (["/usr/bin/time", "-f", "%M"] if gnu_time else []) + [
        binary, "run", "--request", path, "--out", os.path.join(work, "out.safetensors"),
        "--repeat", str(iters), "--device", device]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    timing = json.loads(p.stdout.strip().splitlines()[-1])
    peak_kb = int(p.stderr.strip().splitlines()[-1]) if gnu_time else float("nan")
    return timing["median_ms"], peak_kb / 1024


def run_pyvene(model, req, steer, iters, device):
    import pyvene as pv
    import torch

    def tensor(x):
        return torch.tensor(x, device=device)

    mid = req["config"]["representations"][0]["layer"]
    if "generate" in req:
        cfg = pv.IntervenableConfig([{"layer": mid, "component": "block_output",
                                      "intervention_type": pv.AdditionIntervention}])
        ivm = pv.IntervenableModel(cfg, model)
        base = {"input_ids": tensor(req["base"]["input_ids"])}
        base["attention_mask"] = torch.ones_like(base["input_ids"])
        steer = steer.to(device)

        def once():
            ivm.generate(base, unit_locations={"base": 0}, source_representations=steer,
                         intervene_on_prompt=False, max_new_tokens=32, do_sample=False,
                         min_new_tokens=32)
    else:
        cfg = pv.IntervenableConfig([{"layer": mid, "component": "block_output"}])
        ivm = pv.IntervenableModel(cfg, model)
        base = {"input_ids": tensor(req["base"]["input_ids"])}
        src = {"input_ids": tensor(req["sources"][0]["input_ids"])}
        pos = req["unit_locations"]["sources->base"]
        b = base["input_ids"].shape[0]
        locs = {"sources->base": ([[[pos]] * b], [[[pos]] * b])}

        def once():
            ivm(base, [src], locs)
    times = []
    with torch.no_grad():
        once()
        for _ in range(iters):
            t = time.perf_counter()
            once()
            if device != "cpu":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--only", choices=["smollm2", "gpt2"])
    ap.add_argument("--out")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    binary = vene_bin()
    shapes = [(1, 16), (1, 64), (8, 16), (8, 64), (32, 16), (32, 64)]
    work = tempfile.mkdtemp(prefix="vene-bench-iv-")
    models = []
    if a.only != "gpt2":
        gguf = subprocess.run([binary, "fetch"], capture_output=True, text=True, check=True).stdout.strip()
        models.append(("SmolLM2-135M", gguf, lambda: AutoModelForCausalLM.from_pretrained(
            os.path.dirname(gguf), gguf_file=os.path.basename(gguf), torch_dtype=torch.float32)))
    if a.only != "smollm2":
        gdir = os.path.join(tempfile.gettempdir(), "vene-bench", "gpt2-small-random")
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/bench/make_gpt2_small.py"), gdir], check=True,
                       stdout=subprocess.DEVNULL)
        models.append(("GPT-2 small shape", gdir, lambda: AutoModelForCausalLM.from_pretrained(gdir)))
    rows = []
    for name, path, load in models:
        model = load().eval().to(a.device)
        cfg = model.config
        reqs, mid = requests_for(path, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, shapes)
        steer = torch.randn(cfg.hidden_size, generator=torch.Generator().manual_seed(0)) * 4.0
        save_file({"steer": steer.contiguous()}, os.path.join(work, "steer.safetensors"))
        for label, req in reqs:
            v_ms, v_mb = run_vene(binary, req, work, a.iters, a.device)
            p_ms = run_pyvene(model, req, steer, a.iters, a.device)
            rows.append((name, label, v_ms, p_ms))
            print(f"{name:18} {label:22} vene {v_ms:9.1f} ms  pyvene {p_ms:9.1f} ms  "
                  f"speedup {p_ms / v_ms:5.2f}x  vene peak {v_mb:.0f} MB", file=sys.stderr)
        del model
    lines = [
        f"Measured {datetime.date.today()} on {platform.machine()} ({a.device}) with {a.threads} threads "
        f"({os.cpu_count()} cores), median of {a.iters} runs after a warm-up; vene through "
        f"`vene run --repeat` (model loaded once), pyvene {__import__('pyvene').__version__ if False else '0.1.8'} "
        f"with torch {torch.__version__} in one process. Logits for every position in both.",
        "",
        "| model | request | vene ms | pyvene ms | pyvene / vene |",
        "|---|---|---:|---:|---:|",
    ]
    for name, label, v, p in rows:
        lines.append(f"| {name} | {label} | {v:.1f} | {p:.1f} | {p / v:.2f}x |")
    lines.append("")
    lines.append(f"pyvene process peak RSS: {peak_rss_mb():.0f} MB (all models).")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write("# Interventions: vene vs pyvene\n\n" + text + "\n")


if __name__ == "__main__":
    main()
