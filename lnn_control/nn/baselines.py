"""Standard sequence-model baselines (LSTM, GRU, MLP) with the interface of
:class:`~lnn_control.nn.policy.LiquidPolicy`, so the one behaviour-cloning fit
(:func:`lnn_control.learn.training.train_policy`) trains them on the same windows, with the same
normalisation and the same optimiser-step budget as the liquid policies.

Every baseline maps raw observations x (B, T, n_inputs) to raw commands y (B, T, n_commands):

    z = (x - input_mean) / input_std;   y = net(z) * output_std + output_mean

``forward(x, timespans=None, hx=None) -> (y, h)`` as LiquidPolicy's; elapsed time is not an input
(a standard RNN / MLP sees one sample per step), so ``timespans`` is accepted and ignored. They
have no class-K gain head (``n_gains == 0``) and no model file format: they exist to be compared
against; :meth:`BaselinePolicy.runtime` steps one in closed loop like a PolicyStepper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BASELINES", "BaselinePolicy", "LSTMPolicy", "GRUPolicy", "MLPPolicy", "TorchStepper"]


class BaselinePolicy(nn.Module):
    """Normalisation buffers, names and sizes shared by the baselines (LiquidPolicy's attributes).

    Args:
        n_inputs, n_outputs: observation and command sizes.
        hidden: width of the hidden layer(s) (units).
        input_names, output_names: stored for reports (default ``x[i]`` / ``u[i]``).
    """

    kind = ""
    input_mean: torch.Tensor
    input_std: torch.Tensor
    output_mean: torch.Tensor
    output_std: torch.Tensor

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        hidden: int,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("n_inputs", n_inputs), ("n_outputs", n_outputs), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.n_inputs, self.n_outputs, self.hidden = n_inputs, n_outputs, hidden
        self.n_commands, self.n_gains = n_outputs, 0
        self.gain_names: list[str] = []
        self.input_names = (
            list(input_names) if input_names is not None else [f"x[{i}]" for i in range(n_inputs)]
        )
        self.output_names = (
            list(output_names) if output_names is not None else [f"u[{i}]" for i in range(n_outputs)]
        )
        if len(self.input_names) != n_inputs or len(self.output_names) != n_outputs:
            raise ValueError(
                f"input_names / output_names must have {n_inputs} / {n_outputs} entries, got "
                f"{len(self.input_names)} / {len(self.output_names)}"
            )
        self.state_size = 0
        self.register_buffer("input_mean", torch.zeros(n_inputs))
        self.register_buffer("input_std", torch.ones(n_inputs))
        self.register_buffer("output_mean", torch.zeros(n_outputs))
        self.register_buffer("output_std", torch.ones(n_outputs))

    def set_normalization(self, input_mean: Any, input_std: Any, output_mean: Any, output_std: Any) -> None:
        """Observation (n_inputs,) and command (n_outputs,) mean / std (std > 0), raw units."""
        for name, v in (
            ("input_mean", input_mean),
            ("input_std", input_std),
            ("output_mean", output_mean),
            ("output_std", output_std),
        ):
            buf = getattr(self, name)
            t = torch.as_tensor(np.asarray(v, dtype=np.float64))
            if t.shape != buf.shape or not torch.isfinite(t).all():
                raise ValueError(f"{name} must be {buf.numel()} finite values, got shape {tuple(t.shape)}")
            if name.endswith("std") and not (t > 0).all():
                raise ValueError(f"{name} must be > 0 everywhere")
            buf.copy_(t.to(buf.dtype))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.n_inputs:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (batch, time, {self.n_inputs}), got {shape}")
        return (x.to(self.input_mean.dtype) - self.input_mean) / self.input_std

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.output_std + self.output_mean

    def runtime(self, dtype: Any = np.float64) -> TorchStepper:
        """A stepper (``reset()``, ``step(obs, dt) -> commands``) on a copy of this model, float64."""
        return TorchStepper(self)


class LSTMPolicy(BaselinePolicy):
    """z -> ``nn.LSTM(hidden)`` -> Linear; state [h, c] (B, 2 hidden)."""

    kind = "lstm"

    def __init__(self, n_inputs: int, n_outputs: int, hidden: int = 64, **names: Any) -> None:
        super().__init__(n_inputs, n_outputs, hidden, **names)
        self.rnn = nn.LSTM(n_inputs, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_outputs)
        self.state_size = 2 * hidden

    def forward(
        self, x: torch.Tensor, timespans: Any = None, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._check(x)
        state = None
        if hx is not None:
            H = self.hidden
            state = (hx[:, :H].unsqueeze(0).contiguous(), hx[:, H:].unsqueeze(0).contiguous())
        y, (h, c) = self.rnn(z, state)
        return self._out(self.out(y)), torch.cat([h[0], c[0]], -1)


class GRUPolicy(BaselinePolicy):
    """z -> ``nn.GRU(hidden)`` -> Linear; state h (B, hidden)."""

    kind = "gru"

    def __init__(self, n_inputs: int, n_outputs: int, hidden: int = 64, **names: Any) -> None:
        super().__init__(n_inputs, n_outputs, hidden, **names)
        self.rnn = nn.GRU(n_inputs, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_outputs)
        self.state_size = hidden

    def forward(
        self, x: torch.Tensor, timespans: Any = None, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._check(x)
        y, h = self.rnn(z, None if hx is None else hx.unsqueeze(0).contiguous())
        return self._out(self.out(y)), h[0]


class MLPPolicy(BaselinePolicy):
    """Memoryless: z -> Linear-tanh-Linear-tanh-Linear (two hidden layers); state of size 0."""

    kind = "mlp"

    def __init__(self, n_inputs: int, n_outputs: int, hidden: int = 64, **names: Any) -> None:
        super().__init__(n_inputs, n_outputs, hidden, **names)
        self.net = nn.Sequential(
            nn.Linear(n_inputs, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, n_outputs),
        )

    def forward(
        self, x: torch.Tensor, timespans: Any = None, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._check(x)
        return self._out(self.net(z)), x.new_zeros(x.shape[0], 0)


#: baseline kinds by name (the ``model`` of :class:`lnn_control.learn.training.TrainConfig`)
BASELINES: dict[str, type[BaselinePolicy]] = {"lstm": LSTMPolicy, "gru": GRUPolicy, "mlp": MLPPolicy}


class TorchStepper:
    """One step at a time through a baseline (float64 copy), with PolicyStepper's ``reset`` / ``step``."""

    def __init__(self, model: BaselinePolicy) -> None:
        import copy

        self.model = copy.deepcopy(model).double().eval()
        self.n_inputs, self.n_outputs = model.n_inputs, model.n_outputs
        self.input_names, self.output_names = list(model.input_names), list(model.output_names)
        self._h: torch.Tensor | None = None

    def reset(self) -> None:
        """Zero state (the next step starts a new episode)."""
        self._h = None

    @torch.no_grad()
    def step(self, obs: Any, dt: float) -> np.ndarray:
        """Commands (n_outputs,) for observation ``obs`` (n_inputs,); ``dt`` (s) is not used."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float64).reshape(1, 1, -1))
        y, h = self.model(x, None, self._h)
        self._h = h if h.shape[-1] else None
        return y[0, 0].numpy().copy()
