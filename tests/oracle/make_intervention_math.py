"""Oracle fixtures for the parametrised interventions, computed by pyvene 0.1.8 itself.

For each case this builds one of pyvene's intervention classes directly (as IntervenableModel
would: `embed_dim` plus the representation's kwargs), gives it non-trivial seeded parameters,
calls `forward(base, source, subspaces)` on random tensors and writes
tests/fixtures/interventions/<case>.safetensors with:

  base, source        the inputs (source absent for NoiseIntervention)
  out                 pyvene's output
  state.<name>        every entry of the intervention's state_dict, under pyvene's names
  weight              rotations only: torch's parametrised `rotate_layer.weight`
  metadata "case"     JSON: type, embed_dim, low_rank_dimension, latent_dim, interchange_dim,
                      subspace_partition, intervention_args, subspaces (pyvene's per-example
                      rows or null), dims (the Dims variant vene must resolve them to),
                      orthogonal (whether W should have orthonormal columns)

The shapes are what `forward` receives after pyvene's flattening, i.e. what vene's `apply`
receives: (b, units*d) or (b, p, h*d) for distributed types, (b, units, d) for localist ones.

Run from the repository root:  python3 tests/oracle/make_intervention_math.py
Needs: pyvene==0.1.8, torch, numpy, safetensors.
"""

import json
import os
import types

import numpy as np
import torch
from safetensors.torch import save_file

from pyvene.models.interventions import (
    AutoencoderIntervention,
    BoundlessRotatedSpaceIntervention,
    JumpReLUAutoencoderIntervention,
    LowRankRotatedSpaceIntervention,
    NoiseIntervention,
    PCARotatedSpaceIntervention,
    RotatedSpaceIntervention,
    SigmoidMaskIntervention,
    SigmoidMaskRotatedSpaceIntervention,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "interventions")

ORIG = "rotate_layer.parametrizations.weight.original"
BASE = "rotate_layer.parametrizations.weight.0.base"


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def random_orthogonal(n):
    w = torch.empty(n, n)
    torch.nn.init.orthogonal_(w)
    return w


def set_rotation(iv, original, base):
    with torch.no_grad():
        iv.rotate_layer.parametrizations.weight.original.copy_(original)
        iv.rotate_layer.parametrizations.weight[0].base.copy_(base)


def write(name, iv, case, base, source, subspaces, dims, extra=None):
    kwargs = {}
    if subspaces is not None:
        kwargs["subspaces"] = subspaces
    with torch.no_grad():
        out = iv(base.clone(), None if source is None else source.clone(), **kwargs)
    tensors = {"base": base, "out": out.detach()}
    if source is not None:
        tensors["source"] = source
    for k, v in iv.state_dict().items():
        tensors["state." + k] = v.detach().clone()
    if hasattr(iv, "rotate_layer"):
        tensors["weight"] = iv.rotate_layer.weight.detach().clone()
    tensors.update(extra or {})
    case = dict(case)
    case["subspaces"] = subspaces
    case["dims"] = dims
    meta = {"case": json.dumps(case)}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(ROOT, name + ".safetensors"), metadata=meta)


def spec(type_name, embed_dim, **kw):
    d = {
        "type": type_name,
        "embed_dim": embed_dim,
        "low_rank_dimension": None,
        "latent_dim": None,
        "interchange_dim": None,
        "subspace_partition": None,
        "intervention_args": None,
        "orthogonal": False,
    }
    d.update(kw)
    return d


def noise_cases():
    for name, e, shape, level in [
        ("noise_default", 8, (2, 4, 8), None),
        ("noise_level", 6, (3, 4, 6), 0.5),
        ("noise_heads", 8, (2, 3, 4, 8), None),
        ("noise_long", 300, (1, 4, 300), None),
    ]:
        kw = {} if level is None else {"noise_leve": level}
        iv = NoiseIntervention(embed_dim=e, **kw)
        args = None if level is None else {"noise_level": level}
        base = randn(*shape)
        # the exact numpy draw, for the bit-level check of vene's MT19937 + legacy gauss
        raw = torch.from_numpy(np.random.RandomState(1).randn(1, 4, e))
        write(name, iv, spec("NoiseIntervention", e, intervention_args=args), base, None, None, "prefix", {"numpy_noise": raw})


def sigmoid_mask_cases():
    e = 8
    iv = SigmoidMaskIntervention(embed_dim=e)
    with torch.no_grad():
        iv.mask.copy_(randn(e) * 0.02)
        iv.temperature.copy_(torch.tensor(0.01))
    write("sigmoid_mask", iv, spec("SigmoidMaskIntervention", e), randn(3, 2, e), randn(3, 2, e), None, "prefix")
    iv = SigmoidMaskIntervention(embed_dim=e)
    with torch.no_grad():
        iv.mask.copy_(randn(e) * 2)
        iv.temperature.copy_(torch.tensor(0.7))
    write("sigmoid_mask_t07", iv, spec("SigmoidMaskIntervention", e), randn(2, 3, e), randn(2, 3, e), [[0, 1]] * 2, "shared")


def rotated_cases():
    e = 12
    part = [[0, 4], [4, 8], [8, 12]]
    for name, shape, scale, inter, subs, dims, partition in [
        ("rotated_prefix", (3, e), 0.3, 5, None, "prefix", None),
        ("rotated_default", (3, e), 2.0, None, None, "prefix", None),
        ("rotated_shared", (3, e), 0.3, None, [[0, 3, 7]] * 3, "shared", None),
        ("rotated_ragged", (3, e), 0.3, None, [[0, 1], [2, 3, 4], [5]], "per_example", None),
        ("rotated_per_unit", (3, e), 0.3, None, [[0, 1], [2, 3], [4, 5]], "per_unit", None),
        ("rotated_partition_3d", (2, 3, e), 0.3, None, [[1]] * 2, "shared", part),
    ]:
        kw = {} if partition is None else {"subspace_partition": partition}
        iv = RotatedSpaceIntervention(embed_dim=e, **kw)
        set_rotation(iv, randn(e, e) * scale, random_orthogonal(e))
        if inter is not None:
            iv.set_interchange_dim(inter)
        s = spec("RotatedSpaceIntervention", e, interchange_dim=inter, subspace_partition=partition, orthogonal=True)
        write(name, iv, s, randn(*shape), randn(*shape), subs, dims)


def low_rank_cases():
    e, k = 12, 4
    for name, shape, subs, dims, partition, diag in [
        ("lowrank_full", (3, e), None, "prefix", None, [-1.3, 1.8, -1.0, 1.0]),
        ("lowrank_shared", (3, e), [[0, 2]] * 3, "shared", None, [-1.0, -1.0, 1.5, -1.0]),
        ("lowrank_rows", (3, e), [[0], [1], [0]], "per_unit", [[0, 2], [2, 4]], [-1.0, 1.0, -1.0, -1.0]),
        ("lowrank_3d", (2, 3, e), [[1, 3]] * 2, "shared", None, [-1.0, -1.0, -1.0, -1.0]),
        # trunc(0.6) = 0: torch zeroes that column (W is then not orthogonal)
        ("lowrank_trunc", (3, e), None, "prefix", None, [-1.0, 0.6, -2.7, 1.0]),
    ]:
        kw = {"low_rank_dimension": k}
        if partition is not None:
            kw["subspace_partition"] = partition
        iv = LowRankRotatedSpaceIntervention(embed_dim=e, **kw)
        x = randn(e, k) * 0.5
        for j, v in enumerate(diag):
            x[j, j] = v
        set_rotation(iv, x, random_orthogonal(e))
        orth = all(abs(int(v)) == 1 for v in diag)
        s = spec("LowRankRotatedSpaceIntervention", e, low_rank_dimension=k, subspace_partition=partition, orthogonal=orth)
        write(name, iv, s, randn(*shape), randn(*shape), subs, dims)


def boundless_cases():
    e = 12
    for name, boundary, temp in [("boundless", 0.37, 0.9), ("boundless_clamped", 1.4, 3.0)]:
        iv = BoundlessRotatedSpaceIntervention(embed_dim=e)
        set_rotation(iv, randn(e, e) * 0.3, random_orthogonal(e))
        with torch.no_grad():
            iv.intervention_boundaries.copy_(torch.tensor([boundary]))
        iv.set_temperature(torch.tensor(temp))
        s = spec("BoundlessRotatedSpaceIntervention", e, orthogonal=True)
        write(name, iv, s, randn(3, e), randn(3, e), None, "prefix")


def sigmoid_mask_rotated_cases():
    e = 12
    iv = SigmoidMaskRotatedSpaceIntervention(embed_dim=e)
    set_rotation(iv, randn(e, e) * 0.3, random_orthogonal(e))
    with torch.no_grad():
        iv.masks.copy_(randn(e) * 3)
    iv.set_temperature(torch.tensor(1.5))
    s = spec("SigmoidMaskRotatedSpaceIntervention", e, orthogonal=True)
    write("sigmoid_mask_rotated", iv, s, randn(3, e), randn(3, e), None, "prefix")


def pca_cases():
    e, k = 12, 5
    comps = torch.linalg.qr(randn(e, k))[0].T.contiguous()  # (k, e), orthonormal rows
    mean = randn(e)
    std = torch.rand(e) + 0.5
    for name, inter, subs, dims, scalar_std, via_args in [
        ("pca_prefix", 3, None, "prefix", False, True),
        ("pca_default", None, None, "prefix", True, False),
        ("pca_shared", None, [[0, 4]] * 3, "shared", False, False),
    ]:
        sd = 2.0 if scalar_std else std.numpy()
        pca = types.SimpleNamespace(components_=comps.numpy())
        iv = PCARotatedSpaceIntervention(embed_dim=e, pca=pca, pca_mean=mean.numpy(), pca_std=sd)
        if inter is not None:
            iv.set_interchange_dim(inter)
        args = None
        if via_args:
            args = {
                "pca_components": comps.tolist(),
                "pca_mean": mean.tolist(),
                "pca_std": sd if scalar_std else std.tolist(),
            }
        s = spec("PCARotatedSpaceIntervention", e, interchange_dim=inter, intervention_args=args)
        write(name, iv, s, randn(3, e), randn(3, e), subs, dims)


def autoencoder_cases():
    e = 12
    for name, latent, inter in [("autoencoder_ids", 6, [1, 4]), ("autoencoder_default", 16, None)]:
        iv = AutoencoderIntervention(embed_dim=e, latent_dim=latent)
        with torch.no_grad():
            for p in iv.autoencoder.parameters():
                p.copy_(randn(*p.shape) * 0.5)
        if inter is not None:
            iv.set_interchange_dim(inter)
        s = spec("AutoencoderIntervention", e, latent_dim=latent, interchange_dim=inter)
        write(name, iv, s, randn(3, e), randn(3, e), None, "prefix")


def jumprelu_cases():
    e, k = 8, 10
    for name, subs, dims in [
        ("jumprelu_prefix", None, "prefix"),
        ("jumprelu_shared", [[1, 5, 9]] * 2, "shared"),
        ("jumprelu_ragged", [[0], [3, 4]], "per_example"),
    ]:
        iv = JumpReLUAutoencoderIntervention(embed_dim=e, low_rank_dimension=k)
        with torch.no_grad():
            iv.W_enc.copy_(randn(e, k))
            iv.W_dec.copy_(randn(k, e))
            iv.b_enc.copy_(randn(k) * 0.3)
            iv.b_dec.copy_(randn(e) * 0.3)
            iv.threshold.copy_(torch.rand(k) * 0.8)
        s = spec("JumpReLUAutoencoderIntervention", e, low_rank_dimension=k)
        write(name, iv, s, randn(2, 3, e), randn(2, 3, e), subs, dims)


def main():
    os.makedirs(ROOT, exist_ok=True)
    torch.manual_seed(0)
    noise_cases()
    sigmoid_mask_cases()
    rotated_cases()
    low_rank_cases()
    boundless_cases()
    sigmoid_mask_rotated_cases()
    pca_cases()
    autoencoder_cases()
    jumprelu_cases()
    print("wrote", len(os.listdir(ROOT)), "fixtures to", os.path.normpath(ROOT))


if __name__ == "__main__":
    main()
