#!/usr/bin/env python3
"""Oracle for vene's CausalModel: pyvene 0.1.8's own CausalModel on three models.

Writes tests/fixtures/train/causal_models.json with, per model: inputs, outputs, variable order,
timesteps, run_forward of every input combination, run_interchange of fixed (base, source)
pairs on every intermediate variable, equivalence-class sizes, and find_live_paths of a few
inputs. Booleans are written as 0/1 (vene's values are integers).

The models: pyvene's own test model (C = A and B), the hierarchical equality task of pyvene's
DAS tutorial (W, X, Y, Z over 3 shapes; WX = W==X, YZ = Y==Z, O = WX==YZ), and the seed's sum
(S = a + b, O = S + c over digits 0..3).

Run from the repository root (python3 with pyvene 0.1.8 and torch; CPU, a second):
    python3 tests/oracle/make_train_causal.py
"""
import itertools
import json
import os

from pyvene import CausalModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "train", "causal_models.json"))


def num(v):
    return int(v) if isinstance(v, bool) else v


def setting(s):
    return {k: num(v) for k, v in s.items()}


def models():
    yield "and", CausalModel(
        ["A", "B", "C"], {"A": [True, False], "B": [True, False], "C": [True, False]},
        {"A": [], "B": [], "C": ["A", "B"]},
        {"A": lambda: True, "B": lambda: False, "C": lambda a, b: a and b})
    shapes = [0, 1, 2]
    yield "hierarchical_equality", CausalModel(
        ["W", "X", "Y", "Z", "WX", "YZ", "O"],
        {"W": shapes, "X": shapes, "Y": shapes, "Z": shapes,
         "WX": [True, False], "YZ": [True, False], "O": [True, False]},
        {"W": [], "X": [], "Y": [], "Z": [], "WX": ["W", "X"], "YZ": ["Y", "Z"],
         "O": ["WX", "YZ"]},
        {"W": lambda: 0, "X": lambda: 0, "Y": lambda: 0, "Z": lambda: 0,
         "WX": lambda w, x: w == x, "YZ": lambda y, z: y == z, "O": lambda a, b: a == b})
    digits = [0, 1, 2, 3]
    yield "sum", CausalModel(
        ["a", "b", "c", "S", "O"],
        {"a": digits, "b": digits, "c": digits, "S": list(range(7)), "O": list(range(10))},
        {"a": [], "b": [], "c": [], "S": ["a", "b"], "O": ["S", "c"]},
        {"a": lambda: 0, "b": lambda: 0, "c": lambda: 0,
         "S": lambda a, b: a + b, "O": lambda s, c: s + c})


def main():
    out = {}
    for name, m in models():
        inputs = list(m.inputs)
        combos = [dict(zip(inputs, vals))
                  for vals in itertools.product(*[m.values[i] for i in inputs])]
        forward = [{"input": setting(c), "output": setting(m.run_forward(c))} for c in combos]
        mids = [v for v in m.variables if v not in m.inputs and v not in m.outputs]
        inter = []
        for i, base in enumerate(combos):
            src = combos[(7 * i + 3) % len(combos)]
            for var in mids:
                inter.append({"base": setting(base), "var": var, "source": setting(src),
                              "output": setting(m.run_interchange(base, {var: src}))})
        m.generate_equiv_classes()
        equiv = {var: {str(num(val)): len(lst) for val, lst in cls.items()}
                 for var, cls in m.equiv_classes.items()}
        live = []
        for c in combos[:: max(1, len(combos) // 4)]:
            paths = m.find_live_paths(c)
            live.append({"input": setting(c),
                         "paths": {str(k): v for k, v in paths.items() if v}})
        out[name] = {
            "variables": list(m.variables),
            "inputs": inputs,
            "outputs": list(m.outputs),
            "timesteps": dict(m.timesteps),
            "forward": forward,
            "interchange": inter,
            "equiv_class_sizes": equiv,
            "live_paths": live,
        }
    with open(OUT, "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("wrote", OUT, {k: len(v["forward"]) for k, v in out.items()})


if __name__ == "__main__":
    main()
