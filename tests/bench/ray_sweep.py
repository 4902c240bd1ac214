"""vene.ray.patch throughput: cells/s with 1, 2 and 4 actors on a local Ray instance, against
the same sweep called directly in this process (vene.patch), and the overhead per cell.
Each round runs direct, 1, 2, 4 actors in turn (interleaved), ROUNDS times; medians.
Actor start-up (a process, the import, the model load) is inside the Ray timings.

    RAY_AUTH_MODE=token python tests/bench/ray_sweep.py --out tests/bench/RAY.md

needs the `vene` wheel with Ray (bash bindings/python/test.sh builds one) and SmolLM2
(`vene fetch`)."""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray  # noqa: E402

import vene  # noqa: E402
import vene.ray  # noqa: E402

MODEL = Path.home() / ".cache" / "vene" / "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPONENTS = ["block_output", "mlp_output"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    m = vene.Model.load(str(MODEL))
    base = m.encode("The Eiffel Tower is located in the city of")[:8]
    source = m.encode("The Colosseum is located in the city of")[:8]
    watch = [m.encode(" Paris")[0]]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    times = {k: [] for k in ("direct", 1, 2, 4)}
    cells = None
    for _ in range(args.rounds):
        for k in times:
            t0 = time.monotonic()
            if k == "direct":
                r = vene.patch(m, base, source, watch, components=COMPONENTS)
            else:
                r = vene.ray.patch(str(MODEL), base, source, watch, components=COMPONENTS,
                                   address=None, actors=k, progress=False)
            times[k].append(time.monotonic() - t0)
            cells = len(r["cells"])
    ray.shutdown()
    load = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# vene.ray.patch throughput",
        "",
        f"SmolLM2-135M-Instruct Q4_1, {cells} cells ({' + '.join(COMPONENTS)} x 30 layers x 8"
        f" positions, batch 32), split into 8 parts (one per position); local Ray, num_cpus=4,"
        f" on a {os.cpu_count()}-core machine; {args.rounds} interleaved rounds, medians;"
        f" load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        "| run | seconds | cells/s | time vs direct |",
        "|---|---|---|---|",
    ]
    for k, t in med.items():
        name = "direct vene.patch" if k == "direct" else f"vene.ray.patch, {k} actor(s)"
        lines.append(f"| {name} | {t:.1f} | {cells / t:.1f} | {t / med['direct']:.2f}x |")
    over = (med[1] - med["direct"]) / cells
    lines += ["", f"Overhead per cell with 1 actor against the direct call: {over * 1e3:.1f} ms"
              f" ({med[1] / med['direct']:.2f}x), actor start-up and model load included.",
              "", "Rerun: `RAY_AUTH_MODE=token python tests/bench/ray_sweep.py --out "
              "tests/bench/RAY.md` (with the wheel installed, e.g. target/python/test-venv)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
