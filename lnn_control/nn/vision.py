"""Camera policies: a small conv head in front of a liquid network (the NCP lane-keeping shape).

    images (B, T, H, W, C) pixels 0..255 (channels last, as sensor_msgs/Image rgb8 / mono8)
    z = x * pixel_scale + pixel_offset                        (default: to [-1, 1])
    conv_i: z <- relu(conv2d(z, W_i, b_i, stride_i))          (no padding), i = 1..L
    last conv: n_maps channels of Ho x Wo; each map m through its own linear layer:
        f_m = A_m vec(z_m) + a_m                               (features_per_map features each)
    features = [f_1, ..., f_n_maps]                            (n_maps * features_per_map)
    y, h = LiquidPolicy(features, timespans, h)                (e.g. CfC / LTC on AutoNCP(19, k))

With the defaults (3 conv layers 16/24/8 channels, kernels 5/3/3, strides 2/2/1, 4 features
per map) a 64x48 image gives 8 maps of 12x8 -> 32 features -> a 19-neuron NCP: the shape of
Lechner et al. 2020 (last conv layer 8 channels, each map to 4 features, 32 sensory inputs,
19 neurons), scaled to a 64x48 camera.

Flat observations (``inputs={"n_inputs": N, "image_offset": k}``): the policy then takes the
controller's observation vector o (B, T, N) as the :class:`~lnn_control.control.observation.ObservationMap`
gives it: the image's H*W*C values (extractor scale, row-major (H, W, C)) at o[k : k + H*W*C],
every other element a low-dim input (e.g. the speed) appended to the conv features before the
NCP (normalised by the training statistics; the features are not). So it trains and runs like
any policy of the recipe (``lnn_control.learn.training`` model kind ``conv_ncp``): ``n_inputs``,
``set_normalization`` on the flat statistics, ``runtime()``.

:meth:`VisionPolicy.runtime` gives the torch-free stepper
(:class:`lnn_control.runtime.vision.VisionStepper`), which computes the same numbers.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from lnn_control.nn.policy import LiquidPolicy
from lnn_control.nn.wiring import AutoNCP

__all__ = ["ConvBaseline", "ConvHead", "VisionPolicy", "conv_output_shape"]


def conv_output_shape(height: int, width: int, kernels: Any, strides: Any) -> tuple[int, int]:
    """(Ho, Wo) after unpadded convolutions with these kernel sizes and strides."""
    h, w = int(height), int(width)
    for k, s in zip(kernels, strides):
        h, w = (h - k) // s + 1, (w - k) // s + 1
    return h, w


def _ints(name: str, v: Any) -> list[int]:
    out = [int(a) for a in v]
    if not out or any(a < 1 or a != b for a, b in zip(out, v)):
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {v!r}")
    return out


class ConvHead(nn.Module):
    """Conv layers, then one linear map per channel of the last layer (see the module docstring).

    Args:
        height, width, in_channels: image size (pixels) and channels (3 rgb8, 1 mono8).
        channels, kernels, strides: one entry per conv layer (no padding; ReLU after each).
        features_per_map: features each last-layer channel's map is reduced to.
        pixel_scale, pixel_offset: z = pixel * scale + offset before the first conv.
    """

    def __init__(
        self,
        height: int = 48,
        width: int = 64,
        in_channels: int = 3,
        channels: Any = (16, 24, 8),
        kernels: Any = (5, 3, 3),
        strides: Any = (2, 2, 1),
        features_per_map: int = 4,
        pixel_scale: float = 2.0 / 255.0,
        pixel_offset: float = -1.0,
    ) -> None:
        super().__init__()
        ch, ks, st = _ints("channels", channels), _ints("kernels", kernels), _ints("strides", strides)
        if not len(ch) == len(ks) == len(st):
            raise ValueError(f"channels, kernels, strides need one entry per layer, got {ch}, {ks}, {st}")
        height, width, in_channels, fpm = _ints("height, width, in_channels, features_per_map",
                                                [height, width, in_channels, features_per_map])  # fmt: skip
        ho, wo = conv_output_shape(height, width, ks, st)
        if ho < 1 or wo < 1:
            raise ValueError(f"a {height}x{width} image is too small for kernels {ks} / strides {st}")
        self.convs = nn.ModuleList()
        c_in = in_channels
        for c, k, s in zip(ch, ks, st):
            self.convs.append(nn.Conv2d(c_in, c, k, stride=s))
            c_in = c
        self.n_maps, self.map_size, self.features_per_map = ch[-1], ho * wo, fpm
        bound = 1.0 / self.map_size**0.5
        self.map_weight = nn.Parameter(torch.empty(ch[-1], fpm, ho * wo).uniform_(-bound, bound))
        self.map_bias = nn.Parameter(torch.empty(ch[-1], fpm).uniform_(-bound, bound))
        self.n_features = ch[-1] * fpm
        self.image_shape = (height, width, in_channels)
        self.pixel_scale, self.pixel_offset = float(pixel_scale), float(pixel_offset)
        self._config = {
            "height": height,
            "width": width,
            "in_channels": in_channels,
            "channels": ch,
            "kernels": ks,
            "strides": st,
            "features_per_map": fpm,
            "pixel_scale": float(pixel_scale),
            "pixel_offset": float(pixel_offset),
        }

    def get_config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) pixels -> (N, n_features)."""
        z = images.to(self.map_weight.dtype).permute(0, 3, 1, 2)
        z = z * self.pixel_scale + self.pixel_offset
        for conv in self.convs:
            z = torch.relu(conv(z))
        z = z.flatten(2)  # (N, n_maps, Ho*Wo)
        f = torch.einsum("ncp,cfp->ncf", z, self.map_weight) + self.map_bias
        return f.flatten(1)


class VisionPolicy(nn.Module):
    """:class:`ConvHead` -> :class:`~lnn_control.nn.policy.LiquidPolicy` on its features.

    Args:
        head: a :class:`ConvHead` config dict (or None for the defaults).
        cell: ``"cfc"`` or ``"ltc"``; units: NCP neurons (19); n_outputs: motor neurons
            (commands, e.g. 1 for omega or 2 for v, omega); wiring_seed: the AutoNCP draw.
        inputs: flat-observation layout ``{"n_inputs": N, "image_offset": k}`` (module
            docstring), or None: ``forward`` takes images (B, T, H, W, C).
        sparsity: the AutoNCP synapse sparsity.
        input_names: names of the N flat inputs (stored in the config; flat layout only).
        **policy_options: more :class:`LiquidPolicy` arguments (output_names, proj_size, mode, ...).
    """

    def __init__(
        self,
        head: dict[str, Any] | None = None,
        cell: str = "cfc",
        units: int = 19,
        n_outputs: int = 1,
        wiring_seed: int = 22222,
        inputs: dict[str, int] | None = None,
        sparsity: float = 0.5,
        input_names: list[str] | None = None,
        **policy_options: Any,
    ) -> None:
        super().__init__()
        self.head = ConvHead(**(head or {}))
        self._set_inputs(inputs, input_names)
        wiring = AutoNCP(units, n_outputs, sparsity=sparsity, seed=wiring_seed)
        n_in = self.head.n_features + self.n_extra
        self.policy = LiquidPolicy(n_in, cell, wiring, **self._inner_names(policy_options))
        self._finish()

    def _set_inputs(self, inputs: dict[str, int] | None, input_names: list[str] | None) -> None:
        n_pix = int(np.prod(self.head.image_shape))
        self.inputs = None if inputs is None else {k: int(inputs[k]) for k in ("n_inputs", "image_offset")}
        if self.inputs is None:
            self.n_extra, self.n_inputs, self.image_offset = 0, n_pix, 0
            self.input_names = None
            return
        n, k = self.inputs["n_inputs"], self.inputs["image_offset"]
        if not (0 <= k and k + n_pix <= n):
            raise ValueError(f"inputs: the image's {n_pix} values at offset {k} do not fit {n} inputs")
        self.n_extra, self.n_inputs, self.image_offset = n - n_pix, n, k
        names = list(input_names) if input_names is not None else [f"x{i}" for i in range(n)]
        if len(names) != n:
            raise ValueError(f"input_names: {len(names)} names for {n} inputs")
        self.input_names = names

    def _inner_names(self, opts: dict[str, Any]) -> dict[str, Any]:
        opts = dict(opts)
        if self.input_names is not None and "input_names" not in opts:
            k, n_pix = self.image_offset, int(np.prod(self.head.image_shape))
            extra = self.input_names[:k] + self.input_names[k + n_pix :]
            opts["input_names"] = [f"feature{i}" for i in range(self.head.n_features)] + extra
        return opts

    def _finish(self) -> None:
        self.n_outputs = self.policy.n_outputs
        self.n_commands = self.policy.n_commands
        self.n_gains = self.policy.n_gains
        self.gain_names = self.policy.gain_names
        self.output_names = self.policy.output_names
        self.state_size = self.policy.state_size
        self.image_shape = self.head.image_shape

    # the training loop's view of the model: the flat observation's statistics and the commands'
    @property
    def input_mean(self) -> torch.Tensor:
        return self.policy.input_mean

    @property
    def output_mean(self) -> torch.Tensor:
        return self.policy.output_mean

    @property
    def output_std(self) -> torch.Tensor:
        return self.policy.output_std

    @property
    def input_std(self) -> torch.Tensor:
        """Per flat input, one unit of what the network sees: pixels 1 / |pixel_scale| (one unit
        of the conv head's input), low-dim inputs their training std (training's input noise)."""
        std = self.policy.input_std
        n_pix = int(np.prod(self.head.image_shape))
        pix = torch.full((n_pix,), 1.0 / abs(self.head.pixel_scale), dtype=std.dtype)
        k, f = self.image_offset, self.head.n_features
        return torch.cat([std[f : f + k], pix, std[f + k :]])

    def set_normalization(
        self, input_mean: Any = None, input_std: Any = None, output_mean: Any = None, output_std: Any = None
    ) -> None:
        """Flat statistics (n_inputs,): only the low-dim inputs' are used (the conv features are
        learned at their own scale: mean 0, std 1); commands as :class:`LiquidPolicy`."""
        f, n_pix, k = self.head.n_features, int(np.prod(self.head.image_shape)), self.image_offset

        def inner(v: Any, fill: float) -> Any:
            if v is None:
                return None
            a = np.asarray(v, dtype=np.float64).reshape(-1)
            if a.size != self.n_inputs:
                raise ValueError(f"input statistics must have {self.n_inputs} values, got {a.size}")
            return np.concatenate([np.full(f, fill), a[:k], a[k + n_pix :]])

        self.policy.set_normalization(inner(input_mean, 0.0), inner(input_std, 1.0), output_mean, output_std)

    def get_config(self) -> dict[str, Any]:
        """{"head": ConvHead config, "policy": LiquidPolicy config[, "inputs", "input_names"]}:
        what the runtime needs."""
        cfg: dict[str, Any] = {"head": self.head.get_config(), "policy": self.policy.get_config()}
        if self.inputs is not None:
            cfg["inputs"] = dict(self.inputs)
            cfg["input_names"] = list(self.input_names or [])
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VisionPolicy:
        """Rebuild the architecture from :meth:`get_config` (weights not included)."""
        try:
            head, pol = dict(config["head"]), dict(config["policy"])
        except (KeyError, TypeError):
            raise ValueError("vision policy config needs 'head' and 'policy' mappings") from None
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.head = ConvHead(**head)
        out._set_inputs(config.get("inputs"), config.get("input_names"))
        out.policy = LiquidPolicy.from_config(pol)
        out._finish()
        return out

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) pixels -> (B, T, n_features)."""
        B, T = images.shape[:2]
        return self.head(images.reshape(B * T, *images.shape[2:])).reshape(B, T, -1)

    def forward(
        self,
        images: torch.Tensor,
        timespans: torch.Tensor | float | None = None,
        hx: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, T, H, W, C) pixels (mono8: C = 1) -> y (B, T, n_outputs), h (B, state_size);
        with a flat layout (``inputs``): observations (B, T, n_inputs)."""
        if self.inputs is not None:
            return self._forward_flat(images, timespans, hx, mask)
        if (
            not isinstance(images, torch.Tensor)
            or images.dim() != 5
            or tuple(images.shape[2:]) != self.image_shape
        ):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"images must be a tensor (batch, time, {', '.join(map(str, self.image_shape))}), got {shape}"
            )
        return self.policy(self.features(images), timespans, hx, mask)

    def _forward_flat(
        self, x: torch.Tensor, timespans: Any, hx: torch.Tensor | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.n_inputs:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (batch, time, {self.n_inputs}), got {shape}")
        B, T = x.shape[:2]
        k, n_pix = self.image_offset, int(np.prod(self.head.image_shape))
        img = x[..., k : k + n_pix].reshape(B * T, *self.head.image_shape)
        feats = self.head(img).reshape(B, T, -1).to(self.policy.input_mean.dtype)
        z = torch.cat([feats, x[..., :k].to(feats.dtype), x[..., k + n_pix :].to(feats.dtype)], -1)
        return self.policy(z, timespans, hx, mask)

    def numpy_state(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as float64 numpy, by state-dict name (``head.*``, ``policy.*``)."""
        return {k: v.detach().cpu().double().numpy().copy() for k, v in self.state_dict().items()}

    def runtime(self, dtype: Any = np.float64) -> Any:
        """A torch-free :class:`~lnn_control.runtime.vision.VisionStepper` with these weights."""
        from lnn_control.runtime.vision import VisionStepper

        return VisionStepper(self.get_config(), self.numpy_state(), dtype=dtype)


class ConvBaseline(nn.Module):
    """The comparison models of issue 14: the same :class:`ConvHead` and flat observation layout as
    a flat :class:`VisionPolicy`, with a baseline core instead of the NCP: ``lstm`` (conv+LSTM) or
    ``mlp`` (a feed-forward CNN: conv head -> two tanh layers -> commands, no memory).

    Args:
        head: ConvHead config; core: ``lstm`` | ``gru`` | ``mlp``; hidden: core units;
        inputs: ``{"n_inputs": N, "image_offset": k}``; n_outputs: commands;
        input_names, output_names: names (stored).
    Runs in closed loop through ``runtime()`` (a torch stepper; no model file: comparison only).
    """

    n_extra: int
    n_inputs: int
    image_offset: int
    inputs: dict[str, int] | None
    input_names: list[str] | None

    def __init__(
        self,
        head: dict[str, Any],
        core: str,
        hidden: int,
        inputs: dict[str, int],
        n_outputs: int,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        from lnn_control.nn.baselines import BASELINES

        if core not in BASELINES:
            raise ValueError(f"core must be one of {sorted(BASELINES)}, got {core!r}")
        self.head = ConvHead(**head)
        VisionPolicy._set_inputs(self, inputs, input_names)  # type: ignore[arg-type]
        n_in = self.head.n_features + self.n_extra
        inner = VisionPolicy._inner_names(self, {"output_names": output_names})  # type: ignore[arg-type]
        self.policy = BASELINES[core](n_in, n_outputs, hidden, **inner)
        self.core = core
        self.n_outputs = self.n_commands = n_outputs
        self.n_gains = 0
        self.gain_names: list[str] = []
        self.output_names = self.policy.output_names
        self.state_size = 0
        self.image_shape = self.head.image_shape

    input_mean = VisionPolicy.input_mean
    output_mean = VisionPolicy.output_mean
    output_std = VisionPolicy.output_std
    input_std = VisionPolicy.input_std
    set_normalization = VisionPolicy.set_normalization

    def forward(
        self, x: torch.Tensor, timespans: Any = None, hx: torch.Tensor | None = None, mask: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat observations (B, T, n_inputs) -> commands (B, T, n_outputs), state."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.n_inputs:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (batch, time, {self.n_inputs}), got {shape}")
        B, T = x.shape[:2]
        k, n_pix = self.image_offset, int(np.prod(self.head.image_shape))
        feats = self.head(x[..., k : k + n_pix].reshape(B * T, *self.head.image_shape)).reshape(B, T, -1)
        z = torch.cat([feats, x[..., :k].to(feats.dtype), x[..., k + n_pix :].to(feats.dtype)], -1)
        return self.policy(z, timespans, hx)  # type: ignore[no-any-return]

    def runtime(self, dtype: Any = np.float64) -> Any:
        """A torch stepper (``reset``, ``step(obs, dt)``) on a float64 copy."""
        from lnn_control.nn.baselines import TorchStepper

        return TorchStepper(self)  # type: ignore[arg-type]
