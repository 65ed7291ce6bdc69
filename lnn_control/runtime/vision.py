"""The conv head of a camera policy in plain numpy (no torch), and the camera policy's stepper.

:class:`ConvHeadRuntime` computes what :class:`lnn_control.nn.vision.ConvHead` computes for one
image (H, W, C) of pixels, by im2col: each conv layer is one matmul

    out (C_out, Ho*Wo) = W (C_out, k*k*C_in) @ cols (k*k*C_in, Ho*Wo) + b,   relu

where ``cols`` is a strided view of the input (no padding) copied into a preallocated buffer.
The first layer reads the image channels-last as it comes (rgb8 / mono8): its weights are
reordered to (C_out, k, k, C_in) and the pixel scaling is folded in exactly (no padding, so
conv(a x + c) = a conv(x) + c sum(W) + b). Each last-layer map goes through its own linear
layer in one batched matmul. Layers after the first keep channels-first buffers.

:class:`VisionStepper` = ConvHeadRuntime -> :class:`lnn_control.runtime.stepper.PolicyStepper`:

    y = stepper.step(image (H, W, C) or (H, W), dt s)  ->  (n_outputs,) raw commands [, gains]

With a flat layout (config ``inputs``, see :mod:`lnn_control.nn.vision`) it takes the
controller's observation vector instead, so :class:`lnn_control.control.step.ControlStep` runs
it like any policy:

    y = stepper.step(o (n_inputs,) [.. image H*W*C values at image_offset .., low-dim ..], dt s)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from lnn_control.runtime.stepper import PolicyStepper

__all__ = ["ConvHeadRuntime", "VisionStepper"]


class ConvHeadRuntime:
    """One image -> features (n_features,), numpy only (see the module docstring).

    Args:
        config: ``ConvHead.get_config()``.
        arrays: its state dict as numpy arrays (``convs.{i}.weight``, ``convs.{i}.bias``,
            ``map_weight``, ``map_bias``).
        dtype: float64 (matches torch float64 to ~1e-12) or float32.
    """

    def __init__(
        self, config: dict[str, Any], arrays: dict[str, np.ndarray], dtype: Any = np.float64
    ) -> None:
        if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32, got {dtype}")
        dt = self.dtype = np.dtype(dtype)
        try:
            H, W, C = int(config["height"]), int(config["width"]), int(config["in_channels"])
            chans, kers, strs = list(config["channels"]), list(config["kernels"]), list(config["strides"])
            scale, offset = float(config["pixel_scale"]), float(config["pixel_offset"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"conv head config lacks or mistypes {e}; use ConvHead.get_config()") from None
        self.image_shape = (H, W, C)
        self.layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[Any, ...]]] = []
        h, w, c_in = H, W, C
        for i, (c, k, s) in enumerate(zip(chans, kers, strs)):
            wt = _get(arrays, f"convs.{i}.weight", (c, c_in, k, k))
            b = _get(arrays, f"convs.{i}.bias", (c,))
            ho, wo = (h - k) // s + 1, (w - k) // s + 1
            if i == 0:  # channels-last image: (c, k, k, C_in), pixel scaling folded in
                b = b + offset * wt.sum(axis=(1, 2, 3))
                wt = (wt * scale).transpose(0, 2, 3, 1)
                cols = np.empty((k, k, c_in, ho, wo), dtype=dt)
            else:
                cols = np.empty((c_in, k, k, ho, wo), dtype=dt)
            out = np.empty((c, ho * wo), dtype=dt)
            self.layers.append(
                (
                    np.ascontiguousarray(wt.reshape(c, -1), dtype=dt),
                    b.astype(dt)[:, None],
                    cols,
                    out,
                    (k, s, ho, wo),
                )
            )
            h, w, c_in = ho, wo, c
        fpm = int(config["features_per_map"])
        self._map_w = _get(arrays, "map_weight", (c_in, fpm, h * w)).astype(dt)
        self._map_b = _get(arrays, "map_bias", (c_in, fpm)).astype(dt)[:, :, None]
        self._feat = np.empty((c_in, fpm, 1), dtype=dt)
        self.n_features = c_in * fpm

    def __call__(self, image: Any) -> np.ndarray:
        """Features (n_features,) of one image (H, W, C) or (H, W) (mono), pixel values 0..255."""
        x = np.asarray(image)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.shape != self.image_shape:
            raise ValueError(f"image must have shape {self.image_shape} (H, W, C), got {np.shape(image)}")
        if not np.isfinite(x).all():
            raise ValueError("image contains NaN or Inf")
        z: np.ndarray = np.ascontiguousarray(x)
        for i, (wt, b, cols, out, (k, s, ho, wo)) in enumerate(self.layers):
            if i == 0:  # z (H, W, C): window view (k, k, C, Ho, Wo)
                sh, sw, sc = z.strides
                view = as_strided(
                    z, (k, k, z.shape[2], ho, wo), (sh, sw, sc, sh * s, sw * s), writeable=False
                )
            else:  # z (C, h, w)
                sc, sh, sw = z.strides
                view = as_strided(
                    z, (z.shape[0], k, k, ho, wo), (sc, sh, sw, sh * s, sw * s), writeable=False
                )
            np.copyto(cols, view, casting="unsafe")
            np.matmul(wt, cols.reshape(wt.shape[1], -1), out=out)
            out += b
            np.maximum(out, 0.0, out=out)
            z = out.reshape(-1, ho, wo)
        maps = z.reshape(z.shape[0], -1, 1)  # (n_maps, Ho*Wo, 1)
        np.matmul(self._map_w, maps, out=self._feat)
        self._feat += self._map_b
        return self._feat.reshape(-1).copy()


def _get(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"conv head weights lack {key!r}; pass ConvHead.state_dict() as numpy arrays")
    a = np.asarray(arrays[key], dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"conv head weight {key!r} has shape {a.shape}, the config needs {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"conv head weight {key!r} contains NaN or Inf")
    return a


class VisionStepper:
    """A camera policy's control step without torch: conv head features -> PolicyStepper.

    Args:
        config: ``VisionPolicy.get_config()`` ({"head": ..., "policy": ...}).
        arrays: ``VisionPolicy.numpy_state()`` (names ``head.*`` and ``policy.*``).
        dtype: float64 or float32 (both parts).
    """

    def __init__(
        self, config: dict[str, Any], arrays: dict[str, np.ndarray], dtype: Any = np.float64
    ) -> None:
        if not isinstance(config, dict) or "head" not in config or "policy" not in config:
            raise ValueError("config must be VisionPolicy.get_config(): a dict with 'head' and 'policy'")
        self.config = config
        head = {k[5:]: v for k, v in arrays.items() if k.startswith("head.")}
        pol = {k[7:]: v for k, v in arrays.items() if k.startswith("policy.")}
        self.head = ConvHeadRuntime(config["head"], head, dtype)
        self.policy = PolicyStepper(config["policy"], pol, dtype=dtype)
        if self.policy.n_inputs != self.head.n_features and config.get("inputs") is None:
            raise ValueError(
                f"policy takes {self.policy.n_inputs} inputs but the conv head gives {self.head.n_features}"
            )
        self.n_outputs = self.policy.n_outputs
        self.image_shape = self.head.image_shape
        self.n_gains = self.policy.n_gains
        self.gain_names = self.policy.gain_names
        self.output_names = self.policy.output_names
        self.n_commands = self.policy.n_commands
        self.units, self.state_size, self.cell = self.policy.units, self.policy.state_size, self.policy.cell
        self.kernel = f"conv_im2col+{self.policy.kernel}"
        self.observation: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}
        n_pix = int(np.prod(self.image_shape))
        inputs = config.get("inputs")
        if inputs is None:
            self.n_inputs, self._flat = n_pix, None
            self.input_names = [f"pixel{i}" for i in range(n_pix)]
            return
        try:
            n, k = int(inputs["n_inputs"]), int(inputs["image_offset"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("config 'inputs' must be {'n_inputs': N, 'image_offset': k}") from None
        if not (0 <= k and k + n_pix <= n) or n - n_pix != self.policy.n_inputs - self.head.n_features:
            raise ValueError(
                f"inputs: {n} inputs with the image at {k} do not fit a {n_pix}-pixel head and a policy "
                f"of {self.policy.n_inputs} inputs ({self.head.n_features} features)"
            )
        self.n_inputs, self._flat = n, (k, k + n_pix)
        self.input_names = list(config.get("input_names") or [f"x{i}" for i in range(n)])
        self._z = np.empty(self.policy.n_inputs, dtype=np.float64)

    def reset(self) -> None:
        """Zero the recurrent state (a new episode)."""
        self.policy.reset()

    @property
    def state(self) -> np.ndarray:
        return self.policy.state

    def step(self, image: Any, dt: float) -> np.ndarray:
        """One control step: image (H, W, C) or (H, W) pixels (flat layout: the observation
        vector (n_inputs,)), dt s since the last step."""
        if self._flat is None:
            return self.policy.step(self.head(image), dt)
        o = np.asarray(image, dtype=np.float64)
        if o.shape != (self.n_inputs,):
            raise ValueError(f"obs must have shape ({self.n_inputs},), got {o.shape}")
        a, b = self._flat
        f = self.head.n_features
        z = self._z
        z[:f] = self.head(o[a:b].reshape(self.image_shape))
        z[f : f + a] = o[:a]
        z[f + a :] = o[b:]
        return self.policy.step(z, dt)
