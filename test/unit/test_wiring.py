"""Wirings: structure, equality with ncps's draws, config round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lnn_control.nn.wiring import WIRINGS, AutoNCP, FullyConnected, NCPWiring, RandomSparse, Wiring

ncps_wirings = pytest.importorskip("ncps.wirings")


def test_auto_ncp_19_2_sizes_like_ncps() -> None:
    w = AutoNCP(19, 2)
    assert (w.inter_neurons, w.command_neurons, w.motor_neurons) == (11, 6, 2)
    assert w.layers == [list(range(8, 19)), list(range(2, 8)), [0, 1]]
    assert [w.neuron_type(i) for i in (0, 1, 2, 7, 8, 18)] == [
        "motor",
        "motor",
        "command",
        "command",
        "inter",
        "inter",
    ]


@pytest.mark.parametrize(
    ("units", "outputs", "sparsity", "seed", "n_in"),
    [
        (19, 2, 0.5, 22222, 8),
        (64, 2, 0.5, 3, 8),
        (30, 4, 0.3, 7, 5),
        (12, 1, 0.9, 1, 3),
        (128, 6, 0.7, 11, 20),
    ],
)
def test_auto_ncp_same_matrices_as_ncps(
    units: int, outputs: int, sparsity: float, seed: int, n_in: int
) -> None:
    ours = AutoNCP(units, outputs, sparsity, seed).build(n_in)
    ref = ncps_wirings.AutoNCP(units, outputs, sparsity, seed)
    ref.build(n_in)
    np.testing.assert_array_equal(ours.adjacency, ref.adjacency_matrix)
    np.testing.assert_array_equal(ours.sensory_adjacency, ref.sensory_adjacency_matrix)


def test_fully_connected_same_as_ncps() -> None:
    for self_conn in (True, False):
        ours = FullyConnected(7, 3, seed=5, self_connections=self_conn).build(4)
        ref = ncps_wirings.FullyConnected(7, 3, erev_init_seed=5, self_connections=self_conn)
        ref.build(4)
        np.testing.assert_array_equal(ours.adjacency, ref.adjacency_matrix)
        np.testing.assert_array_equal(ours.sensory_adjacency, ref.sensory_adjacency_matrix)
        assert (np.diag(ours.adjacency) != 0).all() == self_conn


def test_ncp_structure() -> None:
    w = NCPWiring(
        10, 6, 3, sensory_fanout=4, inter_fanout=3, recurrent_command_synapses=5, motor_fanin=2, seed=9
    )
    w.build(7)
    inter, command, motor = w.layers
    allowed = np.zeros((w.units, w.units), bool)
    allowed[np.ix_(inter, command)] = True
    allowed[np.ix_(command, command)] = True
    allowed[np.ix_(command, motor)] = True
    assert not (w.adjacency[~allowed] != 0).any()
    assert not (w.sensory_adjacency[:, command + motor] != 0).any()
    # every neuron has an input, every sensory channel reaches sensory_fanout inter neurons
    assert (np.abs(w.sensory_adjacency[:, inter]).sum(0) > 0).all()
    assert (np.abs(w.adjacency[:, command]).sum(0) > 0).all()
    assert (np.abs(w.adjacency[:, motor]).sum(0) >= 2).all()
    assert (np.abs(w.sensory_adjacency).sum(1) >= 4).all()  # + top-ups of unreached inter neurons
    assert set(np.unique(w.adjacency)) <= {-1, 0, 1}
    # the seed decides everything
    w2 = NCPWiring(10, 6, 3, 4, 3, 5, 2, seed=9).build(7)
    w3 = NCPWiring(10, 6, 3, 4, 3, 5, 2, seed=10).build(7)
    assert w == w2 and w != w3


@pytest.mark.parametrize(
    "wiring",
    [
        AutoNCP(19, 2, seed=4),
        NCPWiring(5, 4, 2, 2, 2, 3, 2, seed=1),
        FullyConnected(6, 2, seed=3, self_connections=False),
        RandomSparse(9, 3, sparsity=0.6, seed=2),
        Wiring(3, 1, [[0, 1, -1], [0, 0, 1], [1, 0, 0]], [[1, 0, 0], [0, -1, 1]]),
    ],
)
def test_config_round_trip_through_json(wiring: Wiring) -> None:
    if not wiring.is_built():
        wiring.build(5)
    cfg = json.loads(json.dumps(wiring.get_config()))
    again = Wiring.from_config(cfg)
    assert type(again) is type(wiring)
    assert again == wiring
    assert again.get_config() == wiring.get_config()
    # unbuilt configs round-trip as well and build to the same matrices
    if wiring.kind != "custom":
        unbuilt = dict(cfg, input_dim=None)
        assert Wiring.from_config(unbuilt).build(wiring.input_dim) == wiring  # type: ignore[arg-type]


def test_random_sparse_counts_and_seed() -> None:
    w = RandomSparse(10, 2, sparsity=0.75, seed=1).build(8)
    assert w.synapse_count == round(100 * 0.25)
    assert w.sensory_synapse_count == round(80 * 0.25)
    assert (np.abs(RandomSparse(10, 2, 0.0, seed=1).adjacency) == 1).all()
    assert RandomSparse(10, 2, 0.75, seed=2).build(8) != w


def test_registry_and_errors() -> None:
    assert set(WIRINGS) == {"custom", "ncp", "auto_ncp", "fully_connected", "random_sparse"}
    with pytest.raises(ValueError, match="unknown wiring type"):
        Wiring.from_config({"type": "mesh"})
    with pytest.raises(ValueError, match="bad auto_ncp wiring config"):
        Wiring.from_config({"type": "auto_ncp", "units": 19})
    with pytest.raises(ValueError, match="outputs=17 must be < units - 2"):
        AutoNCP(19, 17)
    with pytest.raises(ValueError, match="sparsity"):
        AutoNCP(19, 2, sparsity=1.0)
    with pytest.raises(ValueError, match="motor_fanin=7 exceeds command_neurons=6"):
        NCPWiring(10, 6, 2, 3, 3, 2, 7)
    with pytest.raises(ValueError, match="units must be a positive integer"):
        FullyConnected(0)
    with pytest.raises(ValueError, match="sparsity must be in"):
        RandomSparse(5, sparsity=1.0)
    with pytest.raises(ValueError, match="adjacency entries must be -1, 0 or"):
        Wiring(2, 1, [[0, 2], [0, 0]])
    with pytest.raises(ValueError, match="layers must partition"):
        Wiring(3, 1, layers=[[0, 1]])
    w = AutoNCP(19, 2).build(8)
    with pytest.raises(ValueError, match="built for 8 inputs"):
        w.build(9)
    with pytest.raises(ValueError, match="custom Wiring needs sensory_adjacency"):
        Wiring(3).build(2)
    with pytest.raises(ValueError, match="not built"):
        _ = AutoNCP(19, 2).sensory_synapse_count
