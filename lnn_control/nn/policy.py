"""LiquidPolicy: a CfC or LTC network between input and output normalisation, with an optional
BarrierNet gain head; and ``from_ncps`` to take over a trained ``ncps.torch`` module.

    z = (x - input_mean) / input_std
    y_net, h = network(z, timespans, h)                      (CfC or LTC, batch-first)
    y_net = proj(y_net)                                      (optional Linear, ``proj_size``)
    commands = y_net[..., :n_commands] * output_std + output_mean
    gains    = gain_scale * sigmoid(y_net[..., n_commands:])  (the last ``n_gains`` outputs)
    y = [commands, gains]

Both :meth:`LiquidPolicy.forward` and the torch-free stepper (:meth:`LiquidPolicy.runtime`)
take raw observations and return raw commands and positive class-K gains.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from lnn_control.nn.cfc_cell import CfC
from lnn_control.nn.ltc_cell import LTC
from lnn_control.nn.wiring import AutoNCP, FullyConnected, Wiring

__all__ = ["CELLS", "LiquidPolicy", "from_ncps"]

CELLS = ("cfc", "ltc")
_CFC_KEYS = (
    "mode",
    "backbone_units",
    "backbone_layers",
    "backbone_activation",
    "backbone_dropout",
    "synapses",
)
_LTC_KEYS = ("ode_unfolds", "solver", "epsilon", "positive", "input_mapping", "output_mapping")


class LiquidPolicy(nn.Module):
    """A liquid-network policy (see the module docstring for the maths).

    Args:
        n_inputs: observation size.
        cell: ``"cfc"`` or ``"ltc"``.
        wiring: a :class:`~lnn_control.nn.wiring.Wiring` (or its config dict); None for a dense
            network of ``units`` neurons (CfC: all neurons are outputs; LTC: fully connected).
        units: neurons of the dense network (ignored with a wiring).
        mixed_memory: LSTM before the cell (state [h, c], twice the neurons).
        proj_size: optional Linear read-out to this many outputs.
        n_gains: how many of the last outputs are class-K gains; gain_scale: their upper bound.
        input_names / output_names / gain_names: I/O names (lengths n_inputs, n_commands, n_gains).
        CfC options: mode, backbone_units, backbone_layers, backbone_activation, backbone_dropout,
        synapses (``"wiring"``: honour every synapse; ``"ncps"``: as ncps 1.0.1).
        LTC options: ode_unfolds, solver (``fused|euler|rk4``), epsilon, positive, input_mapping,
        output_mapping.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor
    output_mean: torch.Tensor
    output_std: torch.Tensor

    def __init__(
        self,
        n_inputs: int,
        cell: str = "cfc",
        wiring: Wiring | dict[str, Any] | None = None,
        units: int | None = None,
        *,
        mixed_memory: bool = False,
        proj_size: int | None = None,
        n_gains: int = 0,
        gain_scale: float = 4.0,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        gain_names: list[str] | None = None,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_activation: str = "lecun_tanh",
        backbone_dropout: float = 0.0,
        synapses: str = "wiring",
        ode_unfolds: int = 6,
        solver: str = "fused",
        epsilon: float = 1e-8,
        positive: str = "softplus",
        input_mapping: str | None = "affine",
        output_mapping: str | None = "affine",
    ) -> None:
        super().__init__()
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 1:
            raise ValueError(f"n_inputs must be a positive int, got {n_inputs!r}")
        if cell not in CELLS:
            raise ValueError(f"cell {cell!r}: use one of {CELLS}")
        if isinstance(wiring, dict):
            wiring = Wiring.from_config(wiring)
        if wiring is not None and not isinstance(wiring, Wiring):
            raise ValueError(f"wiring must be a Wiring, its config dict or None, got {type(wiring).__name__}")
        if wiring is None and units is None:
            raise ValueError("give a wiring or a number of units")
        if wiring is not None:
            wiring = wiring.copy()  # the policy owns its wiring: later edits to the caller's cannot leak in
        core: CfC | LTC
        if cell == "cfc":
            core = CfC(
                n_inputs,
                wiring if wiring is not None else int(units),  # type: ignore[arg-type]
                mode=mode,
                backbone_units=backbone_units,
                backbone_layers=backbone_layers,
                backbone_activation=backbone_activation,
                backbone_dropout=backbone_dropout,
                mixed_memory=mixed_memory,
                synapses=synapses,
            )
        else:
            core = LTC(
                n_inputs,
                wiring if wiring is not None else int(units),  # type: ignore[arg-type]
                mixed_memory=mixed_memory,
                ode_unfolds=ode_unfolds,
                solver=solver,
                epsilon=epsilon,
                positive=positive,
                input_mapping=input_mapping,
                output_mapping=output_mapping,
            )
        self.net = core
        net_out = core.output_size
        if proj_size is not None and (
            isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 1
        ):
            raise ValueError(f"proj_size must be a positive int or None, got {proj_size!r}")
        self.proj = nn.Linear(net_out, proj_size) if proj_size is not None else None
        self.n_inputs = n_inputs
        self.n_outputs = proj_size if proj_size is not None else net_out
        if isinstance(n_gains, bool) or not isinstance(n_gains, int) or not 0 <= n_gains < self.n_outputs:
            raise ValueError(
                f"n_gains must be an int in [0, {self.n_outputs - 1}] "
                f"(outputs {self.n_outputs}), got {n_gains!r}"
            )
        if not (math.isfinite(gain_scale) and gain_scale > 0):
            raise ValueError(f"gain_scale must be finite and > 0, got {gain_scale}")
        self.n_gains, self.gain_scale = n_gains, float(gain_scale)
        self.n_commands = self.n_outputs - n_gains
        self.input_names = _names("input_names", input_names, n_inputs, "x")
        self.output_names = _names("output_names", output_names, self.n_commands, "u")
        self.gain_names = _names("gain_names", gain_names, n_gains, "p")
        self.register_buffer("input_mean", torch.zeros(n_inputs))
        self.register_buffer("input_std", torch.ones(n_inputs))
        self.register_buffer("output_mean", torch.zeros(self.n_commands))
        self.register_buffer("output_std", torch.ones(self.n_commands))
        self.cell = cell
        self.state_size = core.state_size
        cfg: dict[str, Any] = {
            "cell": cell,
            "n_inputs": n_inputs,
            "wiring": None if wiring is None else core.wiring.get_config(),  # type: ignore[union-attr]
            "units": None if wiring is not None else int(units),  # type: ignore[arg-type]
            "mixed_memory": bool(mixed_memory),
            "proj_size": proj_size,
            "n_gains": n_gains,
            "gain_scale": self.gain_scale,
            "input_names": self.input_names,
            "output_names": self.output_names,
            "gain_names": self.gain_names,
        }
        opts = dict(
            mode=mode,
            backbone_units=backbone_units,
            backbone_layers=backbone_layers,
            backbone_activation=backbone_activation,
            backbone_dropout=backbone_dropout,
            synapses=synapses,
            ode_unfolds=ode_unfolds,
            solver=solver,
            epsilon=epsilon,
            positive=positive,
            input_mapping=input_mapping,
            output_mapping=output_mapping,
        )
        for k in _CFC_KEYS if cell == "cfc" else _LTC_KEYS:
            cfg[k] = opts[k]
        self._config = cfg

    # --- config ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments; ``LiquidPolicy.from_config`` rebuilds the architecture."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LiquidPolicy:
        cfg = dict(config)
        try:
            n_inputs, cell = cfg.pop("n_inputs"), cfg.pop("cell")
        except KeyError as e:
            raise ValueError(f"policy config lacks {e}") from None
        try:
            return cls(n_inputs, cell, **cfg)
        except TypeError as e:
            raise ValueError(f"bad policy config: {e}") from None

    def set_normalization(
        self,
        input_mean: Any = None,
        input_std: Any = None,
        output_mean: Any = None,
        output_std: Any = None,
    ) -> None:
        """Set the normalisation buffers (any None keeps its value); stds must be > 0 and finite."""
        for name, value, n in (
            ("input_mean", input_mean, self.n_inputs),
            ("input_std", input_std, self.n_inputs),
            ("output_mean", output_mean, self.n_commands),
            ("output_std", output_std, self.n_commands),
        ):
            if value is None:
                continue
            v = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1)
            if v.numel() != n or not torch.isfinite(v).all():
                raise ValueError(f"{name} must be {n} finite values, got shape {tuple(v.shape)}")
            if name.endswith("std") and not (v > 0).all():
                raise ValueError(f"{name} must be > 0 everywhere")
            getattr(self, name).copy_(v.to(getattr(self, name).dtype))

    # --- forward -----------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        timespans: torch.Tensor | float | None = None,
        hx: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run a batch of sequences.

        Args:
            x: (B, T, n_inputs) raw observations (cast to the model's dtype).
            timespans: elapsed seconds per sample and step, (B, T), (B, T, 1) or a scalar (> 0,
                finite); None means 1.0.
            hx: (B, state_size) initial state or None (zeros).
            mask: (B, T) bool, False at padding steps: their state update is skipped and
                their outputs are 0.
        Returns:
            y (B, T, n_outputs) raw [commands, gains]; h (B, state_size) state after the last step.
        Raises:
            ValueError naming the argument on a wrong shape, NaN/Inf or a non-positive timespan.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.n_inputs:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (batch, time, {self.n_inputs}), got {shape}")
        B, T, _ = x.shape
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or Inf")
        x = x.to(self.input_mean.dtype)  # inputs follow the model's dtype
        ts = _timespans(timespans, B, T, x)
        if hx is not None:
            if not isinstance(hx, torch.Tensor) or tuple(hx.shape) != (B, self.state_size):
                raise ValueError(
                    f"hx must be a tensor ({B}, {self.state_size}), got {getattr(hx, 'shape', hx)}"
                )
            if not torch.isfinite(hx).all():
                raise ValueError("hx contains NaN or Inf")
            hx = hx.to(x.dtype)
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (B, T):
                raise ValueError(f"mask must be a bool tensor ({B}, {T}), got {getattr(mask, 'shape', mask)}")
            mask = mask.bool()
        z = (x - self.input_mean) / self.input_std
        y, h = self.net(z, ts, hx, mask)
        if self.proj is not None:
            y = self.proj(y)
        y = self._head(y)
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)
        return y, h

    def _head(self, y: torch.Tensor) -> torch.Tensor:
        k = self.n_commands
        cmd = y[..., :k] * self.output_std + self.output_mean
        if self.n_gains == 0:
            return cmd
        return torch.cat([cmd, self.gain_scale * torch.sigmoid(y[..., k:])], -1)

    def runtime(self, dtype: Any = np.float64) -> Any:
        """A torch-free :class:`~lnn_control.runtime.stepper.PolicyStepper` with this policy's weights."""
        from lnn_control.runtime.stepper import PolicyStepper

        return PolicyStepper(self.get_config(), self.numpy_state(), dtype=dtype)

    def numpy_state(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as a float64 numpy array, by state-dict name."""
        return {k: v.detach().cpu().double().numpy().copy() for k, v in self.state_dict().items()}


def _names(arg: str, names: list[str] | None, n: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(n)]
    names = [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"{arg} has {len(names)} names, expected {n}")
    return names


def _timespans(timespans: Any, B: int, T: int, like: torch.Tensor) -> torch.Tensor:
    if timespans is None:
        return like.new_ones(B, T)
    ts = torch.as_tensor(timespans, dtype=like.dtype)
    if ts.dim() == 3 and ts.shape[2] == 1:
        ts = ts[..., 0]
    if ts.dim() == 0:
        ts = ts.expand(B, T)
    if tuple(ts.shape) != (B, T):
        raise ValueError(f"timespans must be a scalar, ({B}, {T}) or ({B}, {T}, 1), got {tuple(ts.shape)}")
    if not torch.isfinite(ts).all() or not (ts > 0).all():
        raise ValueError("timespans must be finite and > 0 seconds everywhere")
    return ts


# --- ncps --------------------------------------------------------------------------------
def from_ncps(module: nn.Module) -> LiquidPolicy:
    """Our policy with the same outputs as an ``ncps.torch`` ``CfC`` or ``LTC`` module.

    Supported: CfC dense or wired (every mode, backbone, mixed memory, ``proj_size``) and LTC
    wired or fully connected (mixed memory, either parameter constraint, any mappings). The
    result computes what ncps computes (wired CfC keeps ncps's dense intra-layer recurrence:
    ``synapses="ncps"``), in the module's dtype, without normalisation (mean 0, std 1).
    Per-sample timespans of shape (B, T) work for any batch size (ncps issues 81-83).
    """
    try:
        from ncps.torch import LTC as NcpsLTC
        from ncps.torch import CfC as NcpsCfC
    except ImportError as e:
        raise ImportError("from_ncps needs the ncps package (pip install ncps)") from e
    if isinstance(module, NcpsCfC):
        policy = _from_ncps_cfc(module)
    elif isinstance(module, NcpsLTC):
        policy = _from_ncps_ltc(module)
    else:
        raise ValueError(f"from_ncps takes an ncps.torch CfC or LTC, got {type(module).__name__}")
    dtype = next(module.parameters()).dtype
    return policy.to(dtype)


def _our_wiring(w: Any, layered_output: bool) -> Wiring:
    """ncps wiring -> ours: the same named class where the matrices agree, else explicit matrices."""
    from ncps import wirings as nw

    ours: Any = None
    if type(w) is nw.AutoNCP:
        ours = AutoNCP(w.units, w._output_size, w._sparsity_level, w._seed)
    elif type(w) is nw.FullyConnected:
        ours = FullyConnected(w.units, w.output_dim, w._erev_init_seed, w.self_connections)
    if ours is not None:
        ours.build(w.input_dim)
        if np.array_equal(ours.adjacency, w.adjacency_matrix) and np.array_equal(
            ours.sensory_adjacency, w.sensory_adjacency_matrix
        ):
            return ours
    layers = [list(map(int, w.get_neurons_of_layer(i))) for i in range(w.num_layers)]
    out = len(layers[-1]) if layered_output else w.output_dim
    if layered_output and sorted(layers[-1]) != list(range(out)):
        raise ValueError("ncps wiring: the last layer must be neurons 0..k-1 to be converted")
    return Wiring(
        w.units, out, w.adjacency_matrix, w.sensory_adjacency_matrix, layers if len(layers) > 1 else None
    )


def _activation_name(module: nn.Module) -> str:
    from ncps.torch.cfc_cell import LeCun

    table: dict[type, str] = {
        LeCun: "lecun_tanh",
        nn.Tanh: "tanh",
        nn.ReLU: "relu",
        nn.SiLU: "silu",
        nn.GELU: "gelu",
    }
    for m in module.modules():
        if type(m) in table:
            return table[type(m)]
    return "lecun_tanh"


def _heads(cell: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused head weight/bias of an ncps CfCCell: rows [ff1, ff2, time_a, time_b] (pure: ff1)."""
    names = ["ff1"] if cell.mode == "pure" else ["ff1", "ff2", "time_a", "time_b"]
    w = torch.cat([getattr(cell, n).weight for n in names], 0)
    b = torch.cat([getattr(cell, n).bias for n in names], 0)
    return w.detach(), b.detach()


def _from_ncps_cfc(m: Any) -> LiquidPolicy:
    wired = hasattr(m, "wiring") and getattr(m, "wired_mode", False)
    n_in = int(m.input_size)
    mixed = bool(m.use_mixed)
    if wired:
        first = m.rnn_cell._layers[0]
        policy = LiquidPolicy(
            n_in,
            "cfc",
            _our_wiring(m.wiring, layered_output=True),
            mode=first.mode,
            mixed_memory=mixed,
            proj_size=m.proj_size,
            synapses="ncps",
        )
        ncells = list(m.rnn_cell._layers)
    else:
        c = m.rnn_cell
        layers = int(c.backbone_layers)
        bu = c.ff1.in_features if layers > 0 else 128
        dropout = [mod.p for mod in c.modules() if isinstance(mod, nn.Dropout)]
        policy = LiquidPolicy(
            n_in,
            "cfc",
            None,
            int(c.hidden_size),
            mode=c.mode,
            backbone_units=bu,
            backbone_layers=layers,
            backbone_activation=_activation_name(c.backbone) if c.backbone is not None else "lecun_tanh",
            backbone_dropout=dropout[0] if dropout else 0.0,
            mixed_memory=mixed,
            proj_size=m.proj_size,
        )
        ncells = [c]
    assert isinstance(policy.net, CfC)
    ours: Any
    with torch.no_grad():
        for ours, theirs in zip(policy.net.cells, ncells):
            k = ours.input_size
            hw, hb = _heads(theirs)
            if theirs.backbone_layers > 0:
                lins = [mod for mod in theirs.backbone if isinstance(mod, nn.Linear)]
                first_w, first_b = lins[0].weight.detach(), lins[0].bias.detach()
                for a, b in zip(ours.backbone, lins[1:]):
                    a.weight.copy_(b.weight)
                    a.bias.copy_(b.bias)
                assert ours.head is not None
                ours.head.weight.copy_(hw)
                ours.head.bias.copy_(hb)
            else:
                first_w, first_b = hw, hb
            ours.w_in.copy_(first_w[:, :k])
            ours.w_rec.copy_(first_w[:, k:])
            ours.bias.copy_(first_b)
            if theirs.mode == "pure":
                ours.w_tau.copy_(theirs.w_tau.reshape(-1))
                ours.A.copy_(theirs.A.reshape(-1))
            if theirs.sparsity_mask is not None:
                H = ours.hidden_size
                mask = theirs.sparsity_mask.detach()
                assert ours.in_mask is not None and ours.rec_mask is not None
                if not (
                    torch.equal(ours.in_mask[:H].to(mask.dtype), mask[:, :k])
                    and bool((mask[:, k:] == 1).all())
                ):
                    raise ValueError(
                        "ncps wired CfC masks do not match its wiring; was the wiring changed after build?"
                    )
        if mixed:
            assert policy.net.lstm is not None
            policy.net.lstm.w_in.copy_(m.lstm.input_map.weight)
            policy.net.lstm.bias.copy_(m.lstm.input_map.bias)
            policy.net.lstm.w_rec.copy_(m.lstm.recurrent_map.weight)
        if policy.proj is not None:
            policy.proj.weight.copy_(m.fc.weight)
            policy.proj.bias.copy_(m.fc.bias)
    return policy


def _from_ncps_ltc(m: Any) -> LiquidPolicy:
    c = m.rnn_cell
    policy = LiquidPolicy(
        int(m.input_size),
        "ltc",
        _our_wiring(m._wiring, layered_output=False),
        mixed_memory=bool(m.use_mixed),
        ode_unfolds=int(c._ode_unfolds),
        epsilon=float(c._epsilon),
        positive="softplus" if c._implicit_param_constraints else "none",
        input_mapping=c._input_mapping if c._input_mapping in ("affine", "linear") else None,
        output_mapping=c._output_mapping if c._output_mapping in ("affine", "linear") else None,
    )
    assert isinstance(policy.net, LTC)
    ours: Any = policy.net.cell
    with torch.no_grad():
        for name, p in c._params.items():
            if name in ("sparsity_mask", "sensory_sparsity_mask"):
                if not torch.equal(getattr(ours, name).to(p.dtype), p.detach()):
                    raise ValueError(
                        f"ncps LTC {name} does not match its wiring; was the wiring changed after build?"
                    )
                continue
            getattr(ours, name).copy_(p)
        if m.use_mixed:
            assert policy.net.lstm is not None
            policy.net.lstm.w_in.copy_(m.lstm.input_map.weight)
            policy.net.lstm.bias.copy_(m.lstm.input_map.bias)
            policy.net.lstm.w_rec.copy_(m.lstm.recurrent_map.weight)
    return policy
