"""The PyTorch side of the forward benchmark: Hugging Face transformers on CPU, the same
shapes, the same deterministic token ids and the same thread count as tests/bench/forward.rs.

    python3 tests/bench/torch_forward.py --model PATH [--name NAME] [--shapes 1x16,8x64]
        [--threads N] [--iters N] [--warmup N] [--out FILE.jsonl]

PATH is a Hugging Face directory or a GGUF file (transformers dequantizes it to f32, as vene
does). The model runs in eval mode under torch.inference_mode(), with use_cache=False and
logits for every position (transformers' default), with its default attention
implementation (sdpa).
"""

import argparse
import json
import os
import time


def peak_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--name")
    ap.add_argument("--shapes", default="1x16,8x64")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--out")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    name = a.name or os.path.basename(a.model.rstrip("/"))
    t0 = time.perf_counter()
    if os.path.isfile(a.model):
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(a.model) or ".", gguf_file=os.path.basename(a.model),
            torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = peak_kb("VmRSS:")
    vocab = model.config.vocab_size
    attn = getattr(model.config, "_attn_implementation", "?")
    print(f"torch {name}: {model.config.num_hidden_layers} layers, "
          f"{sum(p.numel() for p in model.parameters())} params, load {load_ms:.0f} ms, "
          f"{torch.get_num_threads()} threads, attention {attn}, torch {torch.__version__}")
    out = open(a.out, "a") if a.out else None
    for shape in a.shapes.split(","):
        b, s = (int(x) for x in shape.split("x"))
        n = b * s
        ids = torch.tensor([(i * 2654435761 + 12345) % vocab for i in range(n)],
                           dtype=torch.long).reshape(b, s)
        small = n <= 64
        warmup = a.warmup if a.warmup is not None else (3 if small else 1)
        iters = a.iters if a.iters is not None else (20 if small else 6)
        times = []
        check = None
        with torch.inference_mode():
            for r in range(warmup + iters):
                t = time.perf_counter()
                logits = model(input_ids=ids, use_cache=False).logits
                ms = (time.perf_counter() - t) * 1e3
                if r >= warmup:
                    times.append(ms)
                if check is None:
                    check = float(logits[0, s - 1].sum())
        times.sort()
        med = times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
        print(f"  {b}x{s:<4} torch           median {med:9.2f} ms  min {times[0]:9.2f} ms  "
              f"({iters} runs)  check {check:.4f}")
        if out:
            out.write(json.dumps({"engine": "torch", "model": name, "shape": f"{b}x{s}",
                                  "variant": "torch", "median_ms": med, "min_ms": times[0],
                                  "iters": iters, "threads": torch.get_num_threads(),
                                  "check": check}) + "\n")
    peak = peak_kb("VmHWM:")
    print(f"  peak RSS {peak / 1024:.0f} MiB (after load {rss_after_load / 1024:.0f} MiB)")
    if out:
        out.write(json.dumps({"engine": "torch", "model": name, "peak_rss_kb": peak,
                              "rss_after_load_kb": rss_after_load, "load_ms": load_ms,
                              "threads": torch.get_num_threads(),
                              "torch": torch.__version__, "attention": attn}) + "\n")
        out.close()


if __name__ == "__main__":
    main()
