"""vene: causal interventions on neural networks (pyvene semantics) on a Rust engine.

Moving over from pyvene::

    import vene as pv                                   # was: import pyvene as pv
    model = pv.Model.load("path/to/model-or.gguf")      # was: AutoModelForCausalLM...
    iv = pv.IntervenableModel(config, model)            # unchanged: pyvene's config dict

Calls take pyvene's forms (``base``, ``sources``, ``unit_locations``, ``subspaces``,
``source_representations``) and return pyvene's tuple; arrays are numpy, and outputs view the
engine's memory without a copy. Requests go through the same parser as ``vene run``.
"""

import json

import numpy as np

from ._vene import (
    Intervenable as _Intervenable,
    Model,
    TensorOwner,
    VeneError,
    load_plugin,
    register_intervention,
    unregister_intervention,
)

__all__ = [
    "Model",
    "IntervenableModel",
    "ModelOutput",
    "IntervenableModelOutput",
    "VeneError",
    "TensorOwner",
    "load_plugin",
    "register_intervention",
    "unregister_intervention",
    "intervention",
    "patch",
    "trace",
]


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "tolist"):  # torch tensors and the like
        return x.tolist()
    raise TypeError(f"cannot pass a {type(x).__name__} to vene")


def _dumps(x):
    return json.dumps(x, default=_json_default)


def _config_json(config):
    """pyvene's config as JSON text: a dict, a JSON string, a list of representation dicts,
    or a pyvene IntervenableConfig-like object with ``to_dict()``."""
    if config is None or isinstance(config, str):
        return config
    if isinstance(config, (list, tuple)):
        config = {"representations": list(config)}
    elif not isinstance(config, dict) and hasattr(config, "to_dict"):
        config = config.to_dict()
    return _dumps(config)


def _input(x):
    """One input in a request's form: a dict (input_ids, attention_mask, ...), text, or ids."""
    if x is None or isinstance(x, dict):
        return x
    if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], str)):
        return {"text": x}
    return {"input_ids": x}


class ModelOutput(dict):
    """A model's outputs (``logits``, ``last_hidden_state``, ``sequences``) as a dict that also
    reads as attributes, like Hugging Face's output objects."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class IntervenableModelOutput(ModelOutput):
    """pyvene's ``return_dict=True`` output."""


class _Tensors:
    """Arrays a call passes by name, as a request's tensors file."""

    def __init__(self):
        self.arrays = {}

    def add(self, prefix, a):
        if a is None:
            return None
        name = f"{prefix}{len(self.arrays)}"
        self.arrays[name] = a
        return name


def intervention(name, needs_source=True):
    """Decorator: registers ``f(base, source) -> array`` as intervention type ``name``
    ("plugin/type"); configs then name it as ``intervention_type``."""

    def wrap(f):
        register_intervention(name, f, needs_source)
        return f

    return wrap


class IntervenableModel:
    """pyvene's IntervenableModel over a vene :class:`Model`."""

    def __init__(self, config, model, tensors=None):
        self._iv = _Intervenable(model, _config_json(config), tensors)
        self.model = model

    @classmethod
    def load(cls, path, model):
        """A knob (saved by vene or pyvene's ``save()``, or a .wasm knob) on ``model``."""
        self = cls.__new__(cls)
        self._iv = _Intervenable.load_knob(str(path), model)
        self.model = model
        return self

    def save(self, save_directory):
        self._iv.save_knob(str(save_directory))

    # The request body every call becomes (vene run's fields).
    def _body(self, base, sources, unit_locations, subspaces, source_representations,
              intervention_state, output_original_output, logits, generate):
        t = _Tensors()
        srs = source_representations
        if isinstance(srs, dict):
            srs = {k: t.add("source_representation.", v) for k, v in srs.items()}
        elif isinstance(srs, (list, tuple)):
            srs = [t.add("source_representation.", v) for v in srs]
        elif srs is not None:
            srs = t.add("source_representation.", srs)
        states = intervention_state
        if states is not None:
            named = lambda d: {k: t.add("state.", v) for k, v in d.items()}
            if isinstance(states, dict) and all(isinstance(v, dict) for v in states.values()):
                states = {k: named(v) for k, v in states.items()}
            else:
                states = [None if d is None else named(d) for d in states]
        if sources is not None and not isinstance(sources, (list, tuple)):
            sources = [sources]
        body = {
            "base": _input(base),
            "sources": None if sources is None else [_input(s) for s in sources],
            "unit_locations": unit_locations,
            "subspaces": subspaces,
            "source_representations": srs,
            "intervention_state": states,
            "output_original_output": bool(output_original_output),
            "logits": logits,
            "generate": generate,
        }
        return _dumps({k: v for k, v in body.items() if v is not None}), t.arrays

    def run(self, base, sources=None, unit_locations=None, subspaces=None,
            source_representations=None, intervention_state=None,
            output_original_output=False, logits=None, generate=None):
        """One request; returns vene's named outputs ("intervened.logits", "collected.0", ...)
        as a dict of read-only numpy arrays viewing the engine's memory."""
        body, arrays = self._body(base, sources, unit_locations, subspaces,
                                  source_representations, intervention_state,
                                  output_original_output, logits, generate)
        return dict(self._iv.run(body, arrays))

    def run_request(self, body, tensors=None):
        """A request body as ``vene run`` reads it (a dict or JSON text; setup fields such as
        model/config excluded), with ``tensors`` standing in for its tensors file."""
        if not isinstance(body, str):
            body = _dumps(body)
        return dict(self._iv.run(body, tensors))

    @staticmethod
    def _collected(out):
        n = sum(1 for k in out if k.startswith("collected."))
        return [out[f"collected.{i}"] for i in range(n)]

    def __call__(self, base, sources=None, unit_locations=None, source_representations=None,
                 subspaces=None, output_original_output=False, return_dict=False,
                 intervention_state=None, logits=None):
        """pyvene's forward: ``(original_outputs, intervened_outputs)``, or
        ``((original_outputs, collected), intervened_outputs)`` with collect interventions."""
        out = self.run(base, sources, unit_locations, subspaces, source_representations,
                       intervention_state, output_original_output, logits, None)
        original = None
        if "original.logits" in out:
            original = ModelOutput(logits=out["original.logits"])
        intervened = ModelOutput(last_hidden_state=out["intervened.last_hidden_state"])
        if "intervened.logits" in out:
            intervened["logits"] = out["intervened.logits"]
        return self._pack(original, intervened, out, return_dict)

    def _pack(self, original, intervened, out, return_dict):
        collected = self._collected(out)
        if return_dict:
            r = IntervenableModelOutput(original_outputs=original, intervened_outputs=intervened)
            if collected:
                r["collected_activations"] = collected
            return r
        if collected:
            return (original, collected), intervened
        return original, intervened

    def generate(self, base, sources=None, unit_locations=None, source_representations=None,
                 subspaces=None, intervene_on_prompt=False, output_original_output=False,
                 intervention_state=None, max_new_tokens=None, do_sample=None,
                 temperature=None, top_k=None, top_p=None, seed=None, stop_ids=None,
                 ignore_eos=None):
        """pyvene's generate: ``(original, intervened)`` outputs with ``sequences`` (prompt and
        new token ids, int64)."""
        g = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
             "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
             "stop_ids": stop_ids, "ignore_eos": ignore_eos,
             "intervene_on_prompt": bool(intervene_on_prompt)}
        g = {k: v for k, v in g.items() if v is not None}
        out = self.run(base, sources, unit_locations, subspaces, source_representations,
                       intervention_state, output_original_output, None, g)
        original = None
        if "original.generated.ids" in out:
            original = ModelOutput(sequences=out["original.generated.ids"])
        intervened = ModelOutput(sequences=out["generated.ids"])
        return self._pack(original, intervened, out, False)

    def state(self, rep=0):
        """Parameters and buffers of representation ``rep`` under pyvene's names (copies)."""
        return self._iv.state(rep)

    def train(self, data, progress=None, **options):
        """Trains the trainable interventions (DAS rotations, masks, ...) with the mean
        cross-entropy of the labels, as pyvene's ``train_alignment``. ``data``: a list of
        examples in vene's dataset form; ``progress(p)`` gets a dict (epoch, step,
        total_steps, loss, iia, lr_factor, temperature) after every step and may return False
        to stop. ``options``: epochs, batch_size, lr, warmup_ratio, ... (pyvene's defaults)."""
        return json.loads(self._iv.train(_dumps(data), _dumps(options), progress))

    def evaluate(self, data, batch_size=32):
        """Loss and interchange intervention accuracy on ``data``."""
        return json.loads(self._iv.evaluate(_dumps(data), batch_size))


def _model_info(model):
    return json.loads(model.info_json())


Model.info = property(_model_info)


def patch(model, base, source, watch, components=("block_output",), layers=None,
          positions=None, heads=None, batch_size=32, progress=None):
    """An activation-patching sweep (vene patch): every component x layer x position (x head)
    cell, the base run with that site's activation from the source; each cell reads the
    watched tokens. ``base``/``source``: token ids. Returns vene's result as a dict."""
    from ._vene import patch as _patch

    return json.loads(_patch(model, list(base), list(source), list(components), list(watch),
                             layers, positions, heads, batch_size, progress))


def trace(model, tokens, subject, target, kinds=("block_output", "mlp_output",
          "attention_output"), samples=10, noise=3.0, noise_absolute=False, seed=1,
          window=10, batch_size=64, progress=None):
    """Causal tracing (vene trace): ``subject`` is the (start, end) token span."""
    from ._vene import trace as _trace

    return json.loads(_trace(model, list(tokens), subject[0], subject[1], target, list(kinds),
                             samples, noise, noise_absolute, seed, window, batch_size,
                             progress))
