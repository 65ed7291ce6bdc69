"""Policy model files: one ``.npz`` (no pickle) holding every tensor plus a JSON ``__config__``.

Layout (``FORMAT_VERSION`` 2; version 1 files, which have neither ``input_map`` nor
``feedforward``, load as before, and a file without them is still written as version 1):

- one array per state-dict entry of the :class:`~lnn_control.nn.policy.LiquidPolicy`, by its name
  (``net.cells.0.w_in``, ``input_mean``, ...), in the policy's dtype;
- ``__config__``: a 0-d unicode array holding JSON::

      {"format": "lnn_control.policy", "format_version": 1,
       "policy": {cell, n_inputs, wiring (with seed), units, mode, ..., n_gains, gain_scale,
                  input_names, output_names, gain_names},
       "arrays": {name: shape, ...},            # manifest checked on load
       "normalization": {input_mean: [...], input_std: [...], output_mean: [...], output_std: [...]},
       "observation": {...} | null,             # the YAML observation mapping, passed through as is
       "metadata": {...},                       # anything JSON-able (training info, ...)
       "input_map": {names, matrix},            # optional (version 2): network inputs z = matrix @ o
       "feedforward": {kind, ...}}              # optional (version 2): u = network + u_ff(o)

With ``input_map`` / ``feedforward`` the policy's network is a residual one: :func:`load_stepper`
returns a :class:`~lnn_control.runtime.feedforward.FeedforwardStepper` that takes the raw
observation and returns the full command (:mod:`lnn_control.runtime.feedforward`), so every
caller (the node, ``ClosedLoop``, ``evaluate``) runs the same structure. :func:`load_policy`
returns the torch network alone (its inputs are z, its commands the residual).

Camera policies (:class:`~lnn_control.nn.vision.VisionPolicy`, conv head + NCP) use the same
layout with ``"model": "conv_ncp"`` in the config: ``policy`` is then ``VisionPolicy.get_config()``
({head, policy, inputs, input_names}), arrays are named ``head.*`` and ``policy.*``, and
``load_stepper`` gives a torch-free :class:`~lnn_control.runtime.vision.VisionStepper`.

Files are read with ``numpy.load(allow_pickle=False)``: loading never executes code. Anything
wrong (missing, truncated, not a zip, bad JSON, wrong version, missing or extra arrays, wrong
shapes, NaN/Inf weights, a config the code cannot build) raises :class:`ModelFileError` saying
what is wrong. ``load_stepper`` needs numpy only (no torch).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from lnn_control import strict_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFileError",
    "load_policy",
    "load_stepper",
    "read_model_file",
    "save_policy",
]

FORMAT = "lnn_control.policy"  # the file format's name (kept when the module moved to nn/)
FORMAT_VERSION = 2
#: versions this code reads (1: no input_map / feedforward sections)
READABLE_VERSIONS = (1, 2)
_CONFIG_KEY = "__config__"


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says which file and what is wrong."""


def save_policy(
    path: Any,
    policy: Any,
    observation: dict[str, Any] | None = None,
    *,
    feedforward: dict[str, Any] | None = None,
    input_map: dict[str, Any] | None = None,
    **metadata: Any,
) -> str:
    """Write ``policy`` to ``path`` (``.npz`` appended if missing); returns the path written.

    Args:
        path: file path (str or PathLike).
        policy: a :class:`~lnn_control.nn.policy.LiquidPolicy`. For convenience the order
            ``save_policy(policy, path)`` is accepted too.
        observation: the observation mapping (YAML as a dict) stored as is, or None.
        feedforward / input_map: the sections of :mod:`lnn_control.runtime.feedforward`
            (checked against the policy here), or None; either makes the file version 2.
        **metadata: JSON-able training metadata (e.g. ``dataset=...``, ``epochs=...``).
    """
    from torch import nn

    if isinstance(path, nn.Module) and not isinstance(policy, nn.Module):
        path, policy = policy, path
    from lnn_control.nn.policy import LiquidPolicy
    from lnn_control.nn.vision import VisionPolicy

    vision = isinstance(policy, VisionPolicy)
    if not isinstance(policy, LiquidPolicy) and not vision:
        raise ValueError(f"policy must be a LiquidPolicy or VisionPolicy, got {type(policy).__name__}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = {k: v.detach().cpu().numpy().copy() for k, v in policy.state_dict().items()}
    for k, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"policy tensor {k} has NaN/Inf: refusing to save a broken model")
    pre = "policy." if vision else ""
    norm = {
        k: arrays[pre + k].astype(float).tolist()
        for k in ("input_mean", "input_std", "output_mean", "output_std")
    }
    structure: dict[str, Any] = {}
    if feedforward is not None or input_map is not None:
        from lnn_control.runtime.feedforward import FeedforwardStepper

        try:  # the same checks as on load, so a file that saves also loads
            wrapped = FeedforwardStepper(policy.runtime(), feedforward, input_map)
        except ValueError as e:
            raise ValueError(f"feedforward / input_map do not fit the policy: {e}") from None
        if wrapped.feedforward is not None:
            structure["feedforward"] = wrapped.feedforward.config
        if wrapped.input_map is not None:
            structure["input_map"] = wrapped.input_map.config
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if structure else 1,
        "policy": policy.get_config(),
        "arrays": {k: list(a.shape) for k, a in arrays.items()},
        "normalization": norm,
        "observation": observation,
        "metadata": metadata,
        **structure,
        **({"model": "conv_ncp"} if vision else {}),
    }
    try:
        text = strict_json.dumps(config, indent=1, sort_keys=True)  # a NaN metric -> null
    except TypeError as e:
        raise ValueError(f"observation and metadata must be JSON-serialisable: {e}") from None
    if _CONFIG_KEY in arrays:
        raise ValueError(f"policy has a tensor named {_CONFIG_KEY}")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{**arrays, _CONFIG_KEY: np.array(text)})  # type: ignore[arg-type]
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated model under the real name
    return path


def read_model_file(path: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, arrays) of a model file, checked against its manifest; raises ModelFileError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if _CONFIG_KEY not in names:
                raise ModelFileError(f"{path}: no {_CONFIG_KEY} entry; not an lnn_control model file")
            text = str(data[_CONFIG_KEY])
            arrays = {k: np.asarray(data[k]) for k in names if k != _CONFIG_KEY}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise ModelFileError(
            f"{path}: unreadable (truncated or not an .npz written by save_policy): {e}"
        ) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: {_CONFIG_KEY} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ModelFileError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    version = config.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ModelFileError(
            f"{path}: format_version {version!r}, this code reads {' and '.join(map(str, READABLE_VERSIONS))}"
        )
    if version == 1 and ("feedforward" in config or "input_map" in config):
        raise ModelFileError(f"{path}: format_version 1 cannot hold feedforward / input_map sections")
    for key in ("policy", "arrays"):
        if not isinstance(config.get(key), dict):
            raise ModelFileError(f"{path}: config lacks the {key!r} section")
    manifest = config["arrays"]
    missing = sorted(set(manifest) - set(arrays))
    extra = sorted(set(arrays) - set(manifest))
    if missing or extra:
        raise ModelFileError(f"{path}: arrays missing {missing} / unexpected {extra} against the manifest")
    for k, shape in manifest.items():
        if list(arrays[k].shape) != list(shape):
            raise ModelFileError(
                f"{path}: array {k} has shape {list(arrays[k].shape)}, manifest says {shape}"
            )
        if arrays[k].dtype.kind != "f":
            raise ModelFileError(f"{path}: array {k} has dtype {arrays[k].dtype}, expected floating point")
        if not np.all(np.isfinite(arrays[k])):
            raise ModelFileError(f"{path}: array {k} has NaN/Inf")
    return config, arrays


def load_stepper(path: Any, dtype: Any = np.float64, kernel: str = "auto") -> Any:
    """A torch-free :class:`~lnn_control.runtime.stepper.PolicyStepper` from a model file.

    ``dtype`` and ``kernel`` are the stepper's (``kernel``: ``"auto"`` or a name in
    ``KERNELS``). The stepper's ``observation`` and ``metadata`` attributes carry the file's
    sections.
    """
    from lnn_control.runtime.stepper import KERNELS, PolicyStepper

    if not (kernel == "auto" or (isinstance(kernel, str) and kernel in KERNELS)):  # the caller's mistake
        raise ValueError(f"kernel {kernel!r} is unknown; use one of {['auto', *KERNELS]}")
    config, arrays = read_model_file(path)
    try:
        if config.get("model") == "conv_ncp":
            from lnn_control.runtime.vision import VisionStepper

            stepper: Any = VisionStepper(config["policy"], arrays, dtype=dtype)
        else:
            stepper = PolicyStepper(config["policy"], arrays, dtype=dtype, kernel=kernel)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelFileError(f"{os.fspath(path)}: the arrays do not fit the policy config: {e}") from None
    stepper.observation = config.get("observation")
    stepper.metadata = dict(config.get("metadata") or {})
    if config.get("feedforward") is not None or config.get("input_map") is not None:
        from lnn_control.runtime.feedforward import FeedforwardStepper

        try:
            stepper = FeedforwardStepper(stepper, config.get("feedforward"), config.get("input_map"))
        except ValueError as e:
            raise ModelFileError(f"{os.fspath(path)}: feedforward / input_map: {e}") from None
    return stepper


def load_policy(path: Any) -> Any:
    """The :class:`~lnn_control.nn.policy.LiquidPolicy` saved in ``path`` (torch), in the saved dtype.

    The returned module has ``observation`` and ``metadata`` attributes from the file.
    """
    import torch

    from lnn_control.nn.policy import LiquidPolicy

    config, arrays = read_model_file(path)
    try:
        if config.get("model") == "conv_ncp":
            from lnn_control.nn.vision import VisionPolicy

            policy: Any = VisionPolicy.from_config(config["policy"])
        else:
            policy = LiquidPolicy.from_config(config["policy"])
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{os.fspath(path)}: policy config cannot be built: {e}") from None
    expected = {k: list(v.shape) for k, v in policy.state_dict().items()}
    got = {k: list(a.shape) for k, a in arrays.items()}
    if expected != got:
        diff = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        raise ModelFileError(f"{os.fspath(path)}: tensors do not match the policy config: {diff[:8]}")
    dtypes = {a.dtype for a in arrays.values()}
    dtype = torch.float64 if np.dtype(np.float64) in dtypes else torch.float32
    policy = policy.to(dtype)
    policy.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()})
    policy.eval()
    setattr(policy, "observation", config.get("observation"))  # noqa: B010 (nn.Module typing)
    setattr(policy, "metadata", dict(config.get("metadata") or {}))  # noqa: B010
    return policy
