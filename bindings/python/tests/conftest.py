"""Shared helpers: the repository's fixtures, a numpy safetensors reader, tolerances."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

# Ray reads its auth mode when it is imported: every Ray node and driver of the tests uses
# token authentication (the token in ~/.ray/auth_token, created by Ray when missing).
os.environ.setdefault("RAY_AUTH_MODE", "token")

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
PYVENE = FIXTURES / "pyvene"

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "F16": np.float16}


def read_safetensors(path):
    """Every tensor of a safetensors file as numpy arrays (the format: a little-endian u64
    header length, a JSON header, then the raw data)."""
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=_DTYPES[h["dtype"]]).reshape(h["shape"])
    return out


def tolerance(name):
    """The oracle suite's tolerances (tests/pyvene_oracle.rs): ids exact, collected 1e-5,
    everything else 1e-4."""
    if name.endswith(".ids"):
        return None
    return 1e-5 if name.startswith("collected.") else 1e-4


def smollm2_path():
    p = Path(os.environ.get("VENE_SMOLLM2",
                            Path.home() / ".cache" / "vene" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not p.exists():
        pytest.skip(f"SmolLM2 not found at {p} (run `vene fetch`)")
    return p
