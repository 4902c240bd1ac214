#!/usr/bin/env python3
"""Oracle numbers for vene's optimizers and schedules, from torch itself.

Writes tests/fixtures/train/adam.json: for a fixed starting parameter and a fixed sequence of
gradients, the parameter after every step of
  * torch.optim.Adam(lr=1e-2) (pyvene's train_alignment optimizer, default betas/eps/no decay),
  * torch.optim.AdamW(lr=1e-2, weight_decay=0.1),
  * Adam driven by transformers' get_linear_schedule_with_warmup (2 warmup steps of 6),
    the learning-rate schedule pyvene's train_alignment uses,
and torch.linspace(50, 0.1, 7).to(bfloat16), pyvene's temperature schedule.

Run from the repository root (python3 with torch and transformers; CPU, a second):
    python3 tests/oracle/make_train_adam.py
"""
import json
import os

import torch
from transformers import get_linear_schedule_with_warmup

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "train", "adam.json"))

P0 = [[0.5, -1.25, 2.0], [0.0, 0.75, -0.3]]
GRADS = [
    [[0.1, -0.2, 0.3], [0.0, 1.5, -0.05]],
    [[-0.4, 0.1, 0.3], [2.0, -1.0, 0.02]],
    [[0.05, 0.05, -0.6], [0.3, 0.0, 0.7]],
    [[1.0, -0.5, 0.25], [-0.2, 0.4, 0.0]],
    [[0.0, 0.3, -0.1], [0.6, -0.7, 0.9]],
    [[-0.3, -0.3, 0.8], [0.1, 0.2, -0.4]],
]


def run(make_opt, schedule=None):
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float32))
    opt = make_opt([p])
    sched = schedule(opt) if schedule else None
    out = []
    for g in GRADS:
        opt.zero_grad()
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        if sched:
            sched.step()
        out.append(p.detach().tolist())
    return out


result = {
    "p0": P0,
    "grads": GRADS,
    "adam_lr": 1e-2,
    "adam": run(lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    "adamw_weight_decay": 0.1,
    "adamw": run(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)),
    "warmup_steps": 2,
    "total_steps": 6,
    "adam_linear_warmup": run(
        lambda ps: torch.optim.Adam(ps, lr=1e-2),
        lambda o: get_linear_schedule_with_warmup(o, num_warmup_steps=2, num_training_steps=6),
    ),
    "temperature_schedule": torch.linspace(50.0, 0.1, 7).to(torch.bfloat16).float().tolist(),
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(result, f, indent=1)
print("wrote", OUT)
