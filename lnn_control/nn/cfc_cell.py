"""Closed-form continuous-time (CfC) networks (Hasani et al., Nature MI 2022), dense and wired.

One CfC block with hidden state h (H,), input x and elapsed time t (s) computes heads from
z = [x, h] (through an optional backbone MLP when dense):

    ff1 = tanh(W1 z + b1),  ff2 = tanh(W2 z + b2),  sigma = sigmoid(Wa z + ba) * t + (Wb z + bb)
    default:  h' = ff1 * (1 - sigmoid(sigma)) + sigmoid(sigma) * ff2
    no_gate:  h' = ff1 + sigmoid(sigma) * ff2
    pure:     h' = -A * exp(-t (|w_tau| + |f|)) * f + A,  f = W1 z + b1 (no tanh)

(the gate is ``sigmoid(ta * t + tb)`` with ta = Wa z + ba, tb = Wb z + bb.)

A wired CfC (:class:`CfC` with a :class:`~lnn_control.nn.wiring.Wiring`) runs one block per wiring
layer (NCP: inter -> command -> motor); layer l reads the new state of layer l-1 (the inputs for
l = 0) and its own previous state. With ``synapses="wiring"`` every head of every neuron only
sees its wiring synapses (sensory, feed-forward and the sparse recurrent command synapses); a
wiring with synapses this layered scheme cannot express is rejected. ``synapses="ncps"``
reproduces ncps 1.0.1 exactly: ff1/ff2 masked, time gates dense, intra-layer recurrence dense
(ncps issue 53).

Optional mixed memory: an LSTM cell runs first and its output replaces h (state [h, c]).

Speed: the input half of the first affine map is computed for the whole sequence in one
matmul; per step each block is one or two ``addmm`` plus five element-wise ops on fused heads.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lnn_control.nn.wiring import Wiring

__all__ = ["ACTIVATIONS", "CFC_MODES", "CfC", "CfCCell", "LSTMCell", "LeCunTanh", "lecun_tanh"]

CFC_MODES = ("default", "no_gate", "pure")
SYNAPSE_MODES = ("wiring", "ncps")


def lecun_tanh(x: torch.Tensor) -> torch.Tensor:
    """LeCun's scaled tanh, 1.7159 tanh(0.666 x) (the constants ncps uses)."""
    return 1.7159 * torch.tanh(0.666 * x)


class LeCunTanh(nn.Module):
    """Module form of :func:`lecun_tanh`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lecun_tanh(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "lecun_tanh": LeCunTanh,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


class CfCCell(nn.Module):
    """One CfC block: ``h' = cell(x, h, t)``.

    Args:
        input_size: features of x.
        hidden_size: H, neurons of this block.
        mode: ``default`` | ``no_gate`` | ``pure``.
        backbone_units, backbone_layers: MLP on [x, h] before the heads (layers 0: heads read [x, h]).
        backbone_activation: name in :data:`ACTIVATIONS`.
        backbone_dropout: dropout after each backbone activation (training only).
        input_mask: (H, input_size) 0/1, which inputs each neuron sees (heads only; needs layers 0).
        recurrent_mask: (H, H) 0/1, which neurons of this block each neuron sees.
        mask_time_gates: also mask the time-gate heads (False: ff1/ff2 only, as ncps).

    Parameters: ``w_in`` (R, input_size), ``w_rec`` (R, H), ``bias`` (R,) for the first affine map
    (R = backbone_units, or the fused heads G*H: rows [ff1, ff2, time_a, time_b], G = 4; pure: G = 1
    with ``w_tau``, ``A`` (H,)); ``backbone`` further Linear layers; ``head`` Linear when dense.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_activation: str = "lecun_tanh",
        backbone_dropout: float = 0.0,
        input_mask: np.ndarray | None = None,
        recurrent_mask: np.ndarray | None = None,
        mask_time_gates: bool = True,
    ) -> None:
        super().__init__()
        if mode not in CFC_MODES:
            raise ValueError(f"mode {mode!r} is not a CfC mode: use one of {CFC_MODES}")
        if backbone_activation not in ACTIVATIONS:
            raise ValueError(f"backbone_activation {backbone_activation!r}: use one of {sorted(ACTIVATIONS)}")
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}")
        if backbone_layers < 0 or (backbone_layers > 0 and backbone_units < 1):
            raise ValueError(
                f"backbone_layers must be >= 0 and backbone_units >= 1, "
                f"got {backbone_layers}, {backbone_units}"
            )
        if not 0.0 <= backbone_dropout < 1.0:
            raise ValueError(f"backbone_dropout must be in [0, 1), got {backbone_dropout}")
        if backbone_layers > 0 and (input_mask is not None or recurrent_mask is not None):
            raise ValueError("masks need backbone_layers=0 (a backbone mixes all inputs)")
        self.input_size, self.hidden_size, self.mode = int(input_size), int(hidden_size), mode
        self.backbone_layers = int(backbone_layers)
        self.gates = 1 if mode == "pure" else 4
        heads = self.gates * hidden_size
        first = backbone_units if backbone_layers > 0 else heads
        self.w_in = nn.Parameter(torch.empty(first, input_size))
        self.w_rec = nn.Parameter(torch.empty(first, hidden_size))
        self.bias = nn.Parameter(torch.empty(first))
        act = ACTIVATIONS[backbone_activation]
        self.activation = act()
        self.dropout = nn.Dropout(backbone_dropout) if backbone_dropout > 0 else nn.Identity()
        self.backbone = nn.ModuleList(
            nn.Linear(backbone_units, backbone_units) for _ in range(1, backbone_layers)
        )
        self.head = nn.Linear(backbone_units, heads) if backbone_layers > 0 else None
        if mode == "pure":
            self.w_tau = nn.Parameter(torch.zeros(hidden_size))
            self.A = nn.Parameter(torch.ones(hidden_size))
        # Masks are tiled over the heads; time-gate rows stay dense unless mask_time_gates.
        self.in_mask: torch.Tensor | None
        self.rec_mask: torch.Tensor | None
        self.register_buffer("in_mask", self._tile(input_mask, (hidden_size, input_size), mask_time_gates))
        self.register_buffer(
            "rec_mask", self._tile(recurrent_mask, (hidden_size, hidden_size), mask_time_gates)
        )
        self.reset_parameters()

    def _tile(
        self, mask: np.ndarray | None, shape: tuple[int, int], mask_time_gates: bool
    ) -> torch.Tensor | None:
        if mask is None:
            return None
        m = np.abs(np.asarray(mask, dtype=np.float64))
        if m.shape != shape:
            raise ValueError(f"mask must have shape {shape} (neurons, sources), got {m.shape}")
        blocks = [m] * self.gates
        if self.gates == 4 and not mask_time_gates:
            blocks = [m, m, np.ones_like(m), np.ones_like(m)]
        return torch.as_tensor(np.concatenate(blocks, 0), dtype=torch.get_default_dtype())

    def reset_parameters(self) -> None:
        """Xavier-uniform weights per head, as ncps; biases uniform in +-1/sqrt(fan_in)."""
        fan_in = self.input_size + self.hidden_size
        rows = self.w_in.shape[0] // (1 if self.head is not None else self.gates)
        bound = math.sqrt(6.0 / (fan_in + rows))
        with torch.no_grad():
            for w in (self.w_in, self.w_rec):
                w.uniform_(-bound, bound)
            self.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            for lin in [*self.backbone, *([self.head] if self.head is not None else [])]:
                nn.init.xavier_uniform_(lin.weight)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_in, w_rec) with the masks applied (call once per sequence)."""
        w_in = self.w_in if self.in_mask is None else self.w_in * self.in_mask
        w_rec = self.w_rec if self.rec_mask is None else self.w_rec * self.rec_mask
        return w_in, w_rec

    def project(self, x: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
        """Input half of the first affine map, ``x @ w_in.T + bias``; x (..., input_size) -> (..., R)."""
        return torch.nn.functional.linear(x, w_in, self.bias)

    def step(self, xp: torch.Tensor, h: torch.Tensor, ts: torch.Tensor, w_rec: torch.Tensor) -> torch.Tensor:
        """One step from the projected input ``xp`` (B, R), state ``h`` (B, H), elapsed ``ts`` (B, 1) s."""
        z = torch.addmm(xp, h, w_rec.t())
        if self.head is not None:
            z = self.dropout(self.activation(z))
            for lin in self.backbone:
                z = self.dropout(self.activation(lin(z)))
            z = self.head(z)
        H = self.hidden_size
        if self.mode == "pure":
            return self.A - self.A * torch.exp(-ts * (self.w_tau.abs() + z.abs())) * z
        ff = torch.tanh(z[:, : 2 * H])
        ff1, ff2 = ff[:, :H], ff[:, H:]
        gate = torch.sigmoid(torch.addcmul(z[:, 3 * H :], z[:, 2 * H : 3 * H], ts))
        if self.mode == "no_gate":
            return torch.addcmul(ff1, gate, ff2)
        return torch.addcmul(ff1, gate, ff2 - ff1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, ts: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Single step: x (B, input_size), h (B, H), ts scalar or (B,) or (B, 1) s -> h' (B, H)."""
        w_in, w_rec = self.weights()
        return self.step(self.project(x, w_in), h, _as_column(ts, h), w_rec)


class LSTMCell(nn.Module):
    """LSTM cell of the mixed-memory CfC: gates [g, i, f, o] = W x + U h + b, forget bias +1.

    c' = c sigmoid(f + 1) + tanh(g) sigmoid(i),  h' = tanh(c') sigmoid(o).
    Parameters ``w_in`` (4H, in), ``bias`` (4H,), ``w_rec`` (4H, H).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.w_in = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.w_rec = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        nn.init.xavier_uniform_(self.w_in)
        nn.init.uniform_(self.bias, -0.1, 0.1)
        nn.init.orthogonal_(self.w_rec)

    def step(self, xp: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xp = x @ w_in.T + bias (B, 4H); h, c (B, H) -> (h', c')."""
        H = self.hidden_size
        z = torch.addmm(xp, h, self.w_rec.t())
        g = torch.tanh(z[:, :H])
        s = torch.sigmoid(z[:, H:])
        c = torch.addcmul(g * s[:, :H], c, torch.sigmoid(z[:, 2 * H : 3 * H] + 1.0))
        return torch.tanh(c) * s[:, 2 * H :], c


class CfC(nn.Module):
    """A CfC network over sequences, dense (``units`` int) or wired (``units`` a Wiring).

    ``forward(x (B, T, in), ts (B, T) s, h0 (B, S) | None, mask (B, T) bool | None)
    -> (y (B, T, output_size), h_T (B, S))``. S = ``state_size`` = neurons (x2 with mixed memory,
    state [h, c]). Where ``mask`` is False the step is skipped: the state is carried unchanged.
    Wired: the state is ordered layer by layer (``state_neuron_ids``), the output is the motor
    neurons (neuron ids 0..output_dim-1; with ``synapses="ncps"`` the last layer, as ncps).
    """

    def __init__(
        self,
        input_size: int,
        units: int | Wiring,
        mode: str = "default",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_activation: str = "lecun_tanh",
        backbone_dropout: float = 0.0,
        mixed_memory: bool = False,
        synapses: str = "wiring",
    ) -> None:
        super().__init__()
        if synapses not in SYNAPSE_MODES:
            raise ValueError(f"synapses {synapses!r}: use one of {SYNAPSE_MODES}")
        self.input_size = int(input_size)
        self.mixed_memory = bool(mixed_memory)
        self.wiring: Wiring | None = None
        self.cells = nn.ModuleList()
        if isinstance(units, Wiring):
            w = units
            w.build(self.input_size)
            self.wiring = w
            layers = w.layers
            if synapses == "wiring":
                _check_layered(w)
            prev: list[int] | None = None
            for layer in layers:
                assert w.sensory_adjacency is not None
                src = w.sensory_adjacency[:, layer] if prev is None else w.adjacency[np.ix_(prev, layer)]
                rec = (
                    w.adjacency[np.ix_(layer, layer)] if synapses == "wiring" else np.ones((len(layer),) * 2)
                )
                self.cells.append(
                    CfCCell(
                        self.input_size if prev is None else len(prev),
                        len(layer),
                        mode,
                        backbone_layers=0,
                        input_mask=src.T,
                        recurrent_mask=rec.T,
                        mask_time_gates=synapses == "wiring",
                    )
                )
                prev = layer
            self.state_neuron_ids = [i for layer in layers for i in layer]
            self.units = w.units
            if synapses == "ncps":
                self.output_index = list(range(w.units - len(layers[-1]), w.units))
            else:
                pos = {n: k for k, n in enumerate(self.state_neuron_ids)}
                self.output_index = [pos[i] for i in range(w.output_dim)]
        else:
            if isinstance(units, bool) or not isinstance(units, int) or units < 1:
                raise ValueError(f"units must be a positive int or a Wiring, got {units!r}")
            self.units = units
            self.cells.append(
                CfCCell(
                    self.input_size,
                    units,
                    mode,
                    backbone_units,
                    backbone_layers,
                    backbone_activation,
                    backbone_dropout,
                )
            )
            self.state_neuron_ids = list(range(units))
            self.output_index = list(range(units))
        self.mode, self.synapses = mode, synapses
        self.lstm = LSTMCell(self.input_size, self.units) if self.mixed_memory else None
        self.state_size = self.units * (2 if self.mixed_memory else 1)
        self.output_size = len(self.output_index)
        self._sizes = [int(cell.hidden_size) for cell in self._cells()]
        n_out, last_start = self.output_size, self.units - self._sizes[-1]
        # Outputs are a contiguous run of the last layer in every case built above.
        contiguous = self.output_index == list(range(self.output_index[0], self.output_index[0] + n_out))
        if not contiguous or self.output_index[0] < last_start:
            raise ValueError("the wiring's motor neurons (ids 0..output_dim-1) must all be in its last layer")
        self._out_slice = slice(self.output_index[0] - last_start, self.output_index[0] - last_start + n_out)

    def forward(
        self,
        x: torch.Tensor,
        ts: torch.Tensor,
        h0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        U = self.units
        if h0 is None:
            h0 = x.new_zeros(B, self.state_size)
        h_all = h0[:, :U]
        c = h0[:, U:] if self.lstm is not None else None
        sizes = self._sizes
        cells = self._cells()
        hs = list(torch.split(h_all, sizes, dim=1))
        ws = [cell.weights() for cell in cells]
        # Input projections of the first block (and the LSTM) for all steps at once.
        xp0 = cells[0].project(x, ws[0][0])
        xl = torch.nn.functional.linear(x, self.lstm.w_in, self.lstm.bias) if self.lstm is not None else None
        ts3 = ts.unsqueeze(-1)
        outs = []
        for t in range(T):
            tst = ts3[:, t]
            if self.lstm is not None and xl is not None and c is not None:
                h_lstm, c_new = self.lstm.step(xl[:, t], torch.cat(hs, 1) if len(hs) > 1 else hs[0], c)
                prev_hs = list(torch.split(h_lstm, sizes, dim=1)) if len(hs) > 1 else [h_lstm]
            else:
                prev_hs = hs
            new_hs = []
            inp: torch.Tensor | None = None
            for k, cell in enumerate(cells):
                xp = xp0[:, t] if k == 0 else cell.project(inp, ws[k][0])  # type: ignore[arg-type]
                inp = cell.step(xp, prev_hs[k], tst, ws[k][1])
                new_hs.append(inp)
            if mask is not None:
                m = mask[:, t : t + 1]
                new_hs = [torch.where(m, n, o) for n, o in zip(new_hs, hs)]
                if c is not None:
                    c = torch.where(m, c_new, c)
            elif c is not None:
                c = c_new
            hs = new_hs
            outs.append(hs[-1][:, self._out_slice])
        y = torch.stack(outs, 1)
        h = torch.cat(hs, 1) if len(hs) > 1 else hs[0]
        if c is not None:
            h = torch.cat([h, c], 1)
        return y, h

    def _cells(self) -> list[CfCCell]:
        return [c for c in self.cells if isinstance(c, CfCCell)]


def _as_column(ts: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(ts, dtype=like.dtype)
    return t.reshape(-1, 1) if t.dim() > 0 else t.expand(like.shape[0], 1)


def _check_layered(w: Wiring) -> None:
    """Reject synapses a layer-by-layer CfC cannot run (skip or backward connections)."""
    layer_of = np.empty(w.units, dtype=int)
    for k, layer in enumerate(w.layers):
        layer_of[layer] = k
    src, dst = np.nonzero(w.adjacency)
    bad = (layer_of[dst] != layer_of[src]) & (layer_of[dst] != layer_of[src] + 1)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"wired CfC cannot honour synapse {src[i]} -> {dst[i]} (layer {layer_of[src[i]]} to "
            f"{layer_of[dst[i]]}): only feed-forward to the next layer and within a layer; use an LTC"
        )
    assert w.sensory_adjacency is not None
    s_dst = np.nonzero(w.sensory_adjacency)[1]
    if np.any(layer_of[s_dst] != 0):
        raise ValueError(
            "wired CfC: sensory synapses must end in the first layer; use an LTC for this wiring"
        )
