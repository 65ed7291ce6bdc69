"""Wirings: which neuron talks to which, with what sign, as plain objects that any cell consumes.

A wiring of ``units`` neurons driven by ``input_dim`` sensory channels is two signed
adjacency matrices:

- ``adjacency`` (units, units), ``adjacency[i, j] in {-1, 0, +1}``: synapse from neuron i to
  neuron j, excitatory (+1) or inhibitory (-1); 0 means no synapse.
- ``sensory_adjacency`` (input_dim, units): the same from input channel i to neuron j.

Neurons ``0 .. output_dim - 1`` are the motor (output) neurons, as in ncps. ``layers`` lists
the neuron ids of each layer in the order signals flow (NCP: inter, command, motor); a
wired CfC runs one CfC block per layer, an LTC integrates all neurons together.

The sensory matrix depends on the input count, so a wiring is built lazily by
:meth:`Wiring.build` (cells call it with their input size). Every wiring's
``get_config()`` is JSON-serialisable and ``Wiring.from_config(cfg)`` rebuilds the same
matrices (same seed, same random draws), including an already-built input size.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

__all__ = ["WIRINGS", "AutoNCP", "FullyConnected", "NCPWiring", "RandomSparse", "Wiring"]


class Wiring:
    """A wiring given by explicit matrices (also the base class of the generated wirings).

    Args:
        units: number of neurons N (>= 1).
        output_dim: number of motor neurons (ids 0 .. output_dim-1), 1 <= output_dim <= N.
        adjacency: (N, N) signed int matrix, entries in {-1, 0, 1}; None means no synapses.
        sensory_adjacency: (input_dim, N) signed matrix; None until :meth:`build`.
        layers: neuron ids per layer in signal order; None means one layer ``[0 .. N-1]``.
    """

    kind: ClassVar[str] = "custom"

    def __init__(
        self,
        units: int,
        output_dim: int | None = None,
        adjacency: Any = None,
        sensory_adjacency: Any = None,
        layers: list[list[int]] | None = None,
    ) -> None:
        units = _positive_int("units", units)
        output_dim = units if output_dim is None else _positive_int("output_dim", output_dim)
        if output_dim > units:
            raise ValueError(f"output_dim={output_dim} exceeds units={units}: lower output_dim")
        self.units = units
        self.output_dim = output_dim
        self.input_dim: int | None = None
        self.adjacency = np.zeros((units, units), dtype=np.int8)
        self.sensory_adjacency: np.ndarray | None = None
        if adjacency is not None:
            self.adjacency = _signed_matrix("adjacency", adjacency, (units, units))
        self._layers = None if layers is None else _check_layers(layers, units)
        if sensory_adjacency is not None:
            s = np.asarray(sensory_adjacency)
            if s.ndim != 2:
                raise ValueError(f"sensory_adjacency must be 2-D (input_dim, {units}), got shape {s.shape}")
            self.input_dim = int(s.shape[0])
            self.sensory_adjacency = _signed_matrix("sensory_adjacency", s, (s.shape[0], units))

    # --- structure -------------------------------------------------------------------
    @property
    def layers(self) -> list[list[int]]:
        """Neuron ids of each layer in signal order (one layer of all neurons unless overridden)."""
        return (
            [list(layer) for layer in self._layers] if self._layers is not None else [list(range(self.units))]
        )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def neuron_type(self, neuron_id: int) -> str:
        """``"motor"`` for ids below ``output_dim``, else ``"inter"`` (NCP refines this)."""
        return "motor" if neuron_id < self.output_dim else "inter"

    def is_built(self) -> bool:
        return self.input_dim is not None

    def build(self, input_dim: int) -> Wiring:
        """Draw the sensory synapses for ``input_dim`` channels (idempotent for the same size)."""
        input_dim = _positive_int("input_dim", input_dim)
        if self.input_dim is not None:
            if self.input_dim != input_dim:
                raise ValueError(
                    f"wiring was built for {self.input_dim} inputs, got input_dim={input_dim}: "
                    "make a new wiring for a different input size"
                )
            return self
        self.input_dim = input_dim
        self.sensory_adjacency = np.zeros((input_dim, self.units), dtype=np.int8)
        self._build_sensory()
        return self

    def _build_sensory(self) -> None:
        """Custom wirings have no rule for sensory synapses: they must be given explicitly."""
        raise ValueError("a custom Wiring needs sensory_adjacency at construction; it cannot be built")

    def _require_built(self) -> None:
        if self.input_dim is None:
            raise ValueError("wiring is not built: call wiring.build(input_dim) (cells do this)")

    @property
    def synapse_count(self) -> int:
        return int(np.count_nonzero(self.adjacency))

    @property
    def sensory_synapse_count(self) -> int:
        self._require_built()
        assert self.sensory_adjacency is not None
        return int(np.count_nonzero(self.sensory_adjacency))

    # --- config ------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "adjacency": self.adjacency.tolist(),
            "sensory_adjacency": None if self.sensory_adjacency is None else self.sensory_adjacency.tolist(),
            "layers": self._layers,
        }

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable config; ``Wiring.from_config`` rebuilds identical matrices."""
        cfg = {"type": self.kind, **self._params()}
        if self.kind != "custom":
            cfg["input_dim"] = self.input_dim
        return cfg

    @staticmethod
    def from_config(config: dict[str, Any]) -> Wiring:
        """Rebuild any registered wiring from its ``get_config()`` (the ``type`` key picks the class)."""
        if not isinstance(config, dict) or "type" not in config:
            raise ValueError(f"wiring config must be a dict with a 'type' key (one of {sorted(WIRINGS)})")
        cfg = dict(config)
        kind = cfg.pop("type")
        if kind not in WIRINGS:
            raise ValueError(f"unknown wiring type {kind!r}: use one of {sorted(WIRINGS)}")
        input_dim = cfg.pop("input_dim", None)
        try:
            wiring = WIRINGS[kind](**cfg)
        except TypeError as e:
            raise ValueError(f"bad {kind} wiring config: {e}") from None
        if input_dim is not None:
            wiring.build(input_dim)
        return wiring

    def copy(self) -> Wiring:
        """An independent wiring with the same config and matrices."""
        return Wiring.from_config(self.get_config())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wiring):
            return NotImplemented
        same_sensory = (self.sensory_adjacency is None and other.sensory_adjacency is None) or (
            self.sensory_adjacency is not None
            and other.sensory_adjacency is not None
            and np.array_equal(self.sensory_adjacency, other.sensory_adjacency)
        )
        return (
            self.units == other.units
            and self.output_dim == other.output_dim
            and self.layers == other.layers
            and np.array_equal(self.adjacency, other.adjacency)
            and same_sensory
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(units={self.units}, output_dim={self.output_dim}, input_dim={self.input_dim})"


class FullyConnected(Wiring):
    """Every neuron synapses onto every neuron (optionally not itself) and every input onto every neuron.

    Polarity is +1 with probability 2/3 and -1 with 1/3, drawn from ``numpy.random.default_rng(seed)``
    in row-major order (the same draws as ``ncps.wirings.FullyConnected`` with ``erev_init_seed=seed``).
    """

    kind = "fully_connected"

    def __init__(
        self, units: int, output_dim: int | None = None, seed: int = 1111, self_connections: bool = True
    ) -> None:
        super().__init__(units, output_dim)
        self.seed = int(seed)
        self.self_connections = bool(self_connections)
        self._rng = np.random.default_rng(self.seed)
        for src in range(self.units):
            for dst in range(self.units):
                if src == dst and not self.self_connections:
                    continue
                self.adjacency[src, dst] = self._rng.choice([-1, 1, 1])

    def _build_sensory(self) -> None:
        assert self.sensory_adjacency is not None and self.input_dim is not None
        for src in range(self.input_dim):
            for dst in range(self.units):
                self.sensory_adjacency[src, dst] = self._rng.choice([-1, 1, 1])

    def _params(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "seed": self.seed,
            "self_connections": self.self_connections,
        }


class RandomSparse(Wiring):
    """A random fraction ``1 - sparsity`` of all possible synapses (recurrent and sensory).

    Args:
        units: neurons N; output_dim: motor neurons (default N).
        sparsity: fraction of synapses left out, 0 <= sparsity < 1.
        seed: seed of ``numpy.random.default_rng`` for the synapse choice and polarity (+1 w.p. 2/3).
    """

    kind = "random_sparse"

    def __init__(
        self, units: int, output_dim: int | None = None, sparsity: float = 0.5, seed: int = 1111
    ) -> None:
        super().__init__(units, output_dim)
        if not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.sparsity = float(sparsity)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._draw(self.adjacency)

    def _draw(self, matrix: np.ndarray) -> None:
        n = matrix.size
        k = int(round(n * (1.0 - self.sparsity)))
        chosen = self._rng.choice(n, size=k, replace=False)
        signs = self._rng.choice(np.array([-1, 1, 1], dtype=np.int8), size=k)
        matrix.reshape(-1)[chosen] = signs

    def _build_sensory(self) -> None:
        assert self.sensory_adjacency is not None
        self._draw(self.sensory_adjacency)

    def _params(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "sparsity": self.sparsity,
            "seed": self.seed,
        }


class NCPWiring(Wiring):
    """Neural circuit policy wiring (Lechner et al. 2020): sensory -> inter -> command -> motor.

    Neuron ids: motor ``0..m-1``, command ``m..m+c-1``, inter ``m+c..N-1``; layers in signal order
    ``[inter, command, motor]``. Synapses are drawn with ``numpy.random.RandomState(seed)``:

    - each sensory channel synapses onto ``sensory_fanout`` random inter neurons; inter neurons
      left unreached get ``max(1, n_in * sensory_fanout // inter)`` random sensory inputs;
    - each inter neuron onto ``inter_fanout`` command neurons (unreached ones get a mean fan-in);
    - ``recurrent_command_synapses`` random command -> command synapses;
    - each motor neuron from ``motor_fanin`` command neurons (unused command neurons get a
      mean fan-out).

    Polarity is +-1 with equal probability. The draw order is the one of ``ncps.wirings.NCP``, so
    the same arguments and seed give the same matrices as ncps 1.0.1.
    """

    kind = "ncp"

    def __init__(
        self,
        inter_neurons: int,
        command_neurons: int,
        motor_neurons: int,
        sensory_fanout: int,
        inter_fanout: int,
        recurrent_command_synapses: int,
        motor_fanin: int,
        seed: int = 22222,
    ) -> None:
        self.inter_neurons = _positive_int("inter_neurons", inter_neurons)
        self.command_neurons = _positive_int("command_neurons", command_neurons)
        self.motor_neurons = _positive_int("motor_neurons", motor_neurons)
        super().__init__(inter_neurons + command_neurons + motor_neurons, motor_neurons)
        self.sensory_fanout = _positive_int("sensory_fanout", sensory_fanout)
        self.inter_fanout = _positive_int("inter_fanout", inter_fanout)
        self.recurrent_command_synapses = int(recurrent_command_synapses)
        if self.recurrent_command_synapses < 0:
            raise ValueError(f"recurrent_command_synapses must be >= 0, got {recurrent_command_synapses}")
        self.motor_fanin = _positive_int("motor_fanin", motor_fanin)
        if self.motor_fanin > self.command_neurons:
            raise ValueError(f"motor_fanin={motor_fanin} exceeds command_neurons={command_neurons}")
        if self.sensory_fanout > self.inter_neurons:
            raise ValueError(f"sensory_fanout={sensory_fanout} exceeds inter_neurons={inter_neurons}")
        if self.inter_fanout > self.command_neurons:
            raise ValueError(f"inter_fanout={inter_fanout} exceeds command_neurons={command_neurons}")
        self.seed = int(seed)
        m, c = self.motor_neurons, self.command_neurons
        self._motor = list(range(0, m))
        self._command = list(range(m, m + c))
        self._inter = list(range(m + c, self.units))
        self._layers = [self._inter, self._command, self._motor]

    def neuron_type(self, neuron_id: int) -> str:
        if neuron_id < self.motor_neurons:
            return "motor"
        return "command" if neuron_id < self.motor_neurons + self.command_neurons else "inter"

    def _build_sensory(self) -> None:
        # All synapses (not only sensory) are drawn here: the RNG stream starts with the sensory
        # fan-out, so the recurrent part can only be drawn once the input count is known.
        assert self.sensory_adjacency is not None and self.input_dim is not None
        rng = np.random.RandomState(self.seed)
        sensory = list(range(self.input_dim))
        self._fan(rng, self.sensory_adjacency, sensory, self._inter, self.sensory_fanout, self.input_dim)
        self._fan(rng, self.adjacency, self._inter, self._command, self.inter_fanout, self.command_neurons)
        for _ in range(self.recurrent_command_synapses):
            src = rng.choice(self._command)
            dst = rng.choice(self._command)
            self.adjacency[src, dst] = rng.choice([-1, 1])
        # command -> motor is drawn per destination (fan-in), then unused sources get a fan-out
        unused = list(self._command)
        for dst in self._motor:
            for src in rng.choice(self._command, size=self.motor_fanin, replace=False):
                if src in unused:
                    unused.remove(src)
                self.adjacency[src, dst] = rng.choice([-1, 1])
        fanout = int(
            np.clip(int(self.motor_neurons * self.motor_fanin / self.command_neurons), 1, self.motor_neurons)
        )
        for src in unused:
            for dst in rng.choice(self._motor, size=fanout, replace=False):
                self.adjacency[src, dst] = rng.choice([-1, 1])

    @staticmethod
    def _fan(
        rng: np.random.RandomState,
        matrix: np.ndarray,
        sources: list[int],
        targets: list[int],
        fanout: int,
        cap: int,
    ) -> None:
        """Each source onto ``fanout`` targets; unreached targets get the mean fan-in from random sources."""
        unreached = list(targets)
        for src in sources:
            for dst in rng.choice(targets, size=fanout, replace=False):
                if dst in unreached:
                    unreached.remove(dst)
                matrix[src, dst] = rng.choice([-1, 1])
        fanin = int(np.clip(int(len(sources) * fanout / len(targets)), 1, cap))
        for dst in unreached:
            for src in rng.choice(sources, size=fanin, replace=False):
                matrix[src, dst] = rng.choice([-1, 1])

    def _params(self) -> dict[str, Any]:
        return {
            "inter_neurons": self.inter_neurons,
            "command_neurons": self.command_neurons,
            "motor_neurons": self.motor_neurons,
            "sensory_fanout": self.sensory_fanout,
            "inter_fanout": self.inter_fanout,
            "recurrent_command_synapses": self.recurrent_command_synapses,
            "motor_fanin": self.motor_fanin,
            "seed": self.seed,
        }


class AutoNCP(NCPWiring):
    """An NCP sized from a neuron count: ``AutoNCP(19, 2)`` is 11 inter, 6 command, 2 motor.

    With density d = 1 - sparsity and n = units - outputs: command = max(1, int(0.4 n)),
    inter = n - command, sensory_fanout = max(1, int(d inter)), inter_fanout = motor_fanin =
    max(1, int(d command)), recurrent_command_synapses = max(1, int(2 d command)) (as ncps).

    Args:
        units: total neurons (> outputs + 2); outputs: motor neurons;
        sparsity: in [0.1, 1.0); seed: RNG seed of the synapse draw.
    """

    kind = "auto_ncp"

    def __init__(self, units: int, outputs: int, sparsity: float = 0.5, seed: int = 22222) -> None:
        units = _positive_int("units", units)
        outputs = _positive_int("outputs", outputs)
        if outputs >= units - 2:
            raise ValueError(f"outputs={outputs} must be < units - 2 = {units - 2}: add neurons")
        if not 0.1 <= float(sparsity) < 1.0:
            raise ValueError(f"sparsity must be in [0.1, 1.0), got {sparsity}")
        density = 1.0 - float(sparsity)
        n = units - outputs
        command = max(int(0.4 * n), 1)
        inter = n - command
        super().__init__(
            inter,
            command,
            outputs,
            sensory_fanout=max(int(inter * density), 1),
            inter_fanout=max(int(command * density), 1),
            recurrent_command_synapses=max(int(command * density * 2), 1),
            motor_fanin=max(int(command * density), 1),
            seed=seed,
        )
        self.sparsity = float(sparsity)

    def _params(self) -> dict[str, Any]:
        return {"units": self.units, "outputs": self.output_dim, "sparsity": self.sparsity, "seed": self.seed}


WIRINGS: dict[str, type[Wiring]] = {
    cls.kind: cls for cls in (Wiring, FullyConnected, RandomSparse, NCPWiring, AutoNCP)
}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _signed_matrix(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(value)
    if m.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {m.shape}")
    if not np.all(np.isin(m, (-1, 0, 1))):
        raise ValueError(f"{name} entries must be -1, 0 or +1 (synapse polarity)")
    return m.astype(np.int8)


def _check_layers(layers: list[list[int]], units: int) -> list[list[int]]:
    flat = [int(i) for layer in layers for i in layer]
    if sorted(flat) != list(range(units)) or any(len(layer) == 0 for layer in layers):
        raise ValueError(f"layers must partition neuron ids 0..{units - 1} into non-empty lists")
    return [[int(i) for i in layer] for layer in layers]
