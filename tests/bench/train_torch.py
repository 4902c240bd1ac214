"""DAS training-step benchmark, pyvene + PyTorch side (CPU): the same step as
tests/bench/train_step.rs. LowRankRotatedSpaceIntervention of rank 16 at the middle layer's
block_output, last position (source position = base position), batch 32 x 16 tokens, the same
deterministic ids, cross-entropy of the last position's logits, backward, torch.optim.Adam
(lr 1e-3), as pyvene's train_alignment does a step.

    python3 tests/bench/train_torch.py --model PATH [--name NAME] [--steps 8] [--warmup 2]
        [--batch 32] [--seq 16] [--rank 16] [--threads N] [--out FILE.jsonl]

PATH is a Hugging Face directory or a GGUF file (transformers dequantizes it to f32, as vene
does). Appends one JSON object per run to --out (or prints it): per-step milliseconds, median,
steps per second, RSS after load and peak RSS of the process (VmHWM), first and last loss.

With --vene BENCH_BINARY (tests/bench/train_step.rs, built by `cargo bench --bench train_step
--no-run`), the vene bench is started in --serve mode on the same model and the two engines
alternate step by step (the order flips every round), so both see the same machine load; each
engine times its own steps, and both JSON objects are written.
"""

import argparse
import json
import os
import time


def proc_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default="model")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out")
    ap.add_argument("--vene", help="the train_step bench binary: alternate with it step by step")
    a = ap.parse_args()

    import subprocess

    import torch
    import pyvene as pv
    from transformers import AutoModelForCausalLM

    vene = None
    if a.vene:
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        vene = subprocess.Popen(
            [a.vene, "--serve", "--model", a.model, "--name", a.name, "--steps", str(a.steps),
             "--warmup", str(a.warmup), "--batch", str(a.batch), "--seq", str(a.seq),
             "--rank", str(a.rank)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

        def vene_step():
            vene.stdin.write("step\n")
            vene.stdin.flush()
            return json.loads(vene.stdout.readline())

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if a.model.endswith(".gguf"):
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(a.model) or ".", gguf_file=os.path.basename(a.model),
            torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    vocab = cfg.vocab_size
    layer = n_layers // 2
    im = pv.IntervenableModel(pv.IntervenableConfig(representations=[pv.RepresentationConfig(
        layer=layer, component="block_output", unit="pos",
        intervention_type=pv.LowRankRotatedSpaceIntervention, low_rank_dimension=a.rank)]),
        model)
    b, s = a.batch, a.seq
    base = torch.tensor([[(i * 2654435761 + 12345) % vocab for i in range(r * s, (r + 1) * s)]
                         for r in range(b)])
    source = torch.tensor([[(i * 40503 + 777) % vocab for i in range(r * s, (r + 1) * s)]
                           for r in range(b)])
    labels = torch.tensor([(r * 7919 + 13) % vocab for r in range(b)])
    loc = {"sources->base": ([[[s - 1]] * b], [[[s - 1]] * b])}
    rss_after_load_kb = proc_kb("VmRSS:")
    opt = torch.optim.Adam(im.get_trainable_parameters(), lr=1e-3)
    times, losses = [], []

    def torch_step():
        t = time.perf_counter()
        opt.zero_grad()
        _, out = im({"input_ids": base}, [{"input_ids": source}], loc)
        loss = torch.nn.functional.cross_entropy(out.logits[:, -1], labels)
        loss.backward()
        opt.step()
        times.append((time.perf_counter() - t) * 1e3)
        losses.append(loss.item())

    for i in range(a.warmup + a.steps):
        if vene is not None and i % 2 == 0:
            vene_step()
        torch_step()
        if vene is not None and i % 2 == 1:
            vene_step()
    vene_line = None
    if vene is not None:
        vene.stdin.write("quit\n")
        vene.stdin.flush()
        vene_line = vene.stdout.readline().strip()
        vene.wait()
    timed = times[a.warmup:]
    srt = sorted(timed)
    median = srt[len(srt) // 2]
    line = {
        "engine": "torch", "model": a.name, "path": a.model, "layer": layer,
        "hidden": cfg.hidden_size, "batch": b, "seq": s, "rank": a.rank,
        "step_ms": timed, "median_ms": median, "min_ms": srt[0], "steps_per_s": 1e3 / median,
        "load_ms": load_ms, "rss_after_load_kb": rss_after_load_kb,
        "peak_rss_kb": proc_kb("VmHWM:"), "loss_first": losses[0], "loss_last": losses[-1],
        "threads": a.threads, "torch": torch.__version__, "pyvene": getattr(pv, "__version__", "?"),
    }
    text = json.dumps(line)
    if vene_line:
        text = vene_line + "\n" + text
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
