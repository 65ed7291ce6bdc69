"""Model-based structure around a liquid network: an input map and a feed-forward torque (numpy only).

A torque-controlled arm's command is ``tau = g(q) + tau_fb``: the gravity torque g(q), a smooth but
strongly configuration-dependent trigonometric map (up to 6 N m on joint 2 of the built-in arm), plus
a feedback part that depends on the goal error and the velocity. A small network asked to produce
``tau`` from raw ``(q, dq, q_goal)`` must build both, and at the goal its torque error ``d tau``
becomes a steady-state position error ``d tau / Kp`` (the closed loop is a PD loop): within the arm's
0.05 rad tolerance only for errors under 0.3 / 1.5 / 0.4 N m on joints 1 / 2 / 3. The control
engineer's split, declared in the model file and run here at every step::

    z = A o                      input map: e.g. (q_goal - q, dq) from o = (q, dq, q_goal)
    y = network.step(z, dt)      the liquid network: the residual command (normalised inside)
    u = y[:k] + u_ff(o)          feed-forward: the gravity torque of the robot model
    -> [u, gains]                (the safety filter then sees u, as it saw the plain network's)

Model-file sections (``__config__`` JSON, :mod:`lnn_control.runtime.model_file`):

Both sections may carry free-text ``source`` / ``note`` entries (why the structure is there).

``"input_map": {"names": [...], "matrix": [[...], ...], "observation_names": [...]}``
    z = matrix @ o, matrix (n_network_inputs, n_observation) float; names: the network's inputs;
    observation_names (optional): o's (the stepper's ``input_names``).
``"feedforward": {"kind": "gravity_pitch_chain", "q_index": [...], "joints": [...],``
``"moments": [[sx, sz], ...], "gravity": 9.81, "source": "..."}``
    The gravity torque of a serial chain whose gravity-loaded joints all turn about parallel
    horizontal axes (a yaw base joint carries no gravity torque): ``q = o[q_index]`` (rad),
    ``joints[j]``: the command / joint index of the j-th pitch joint along the chain,
    ``moments[j] = (sx, sz)`` kg m: link j's own mass times its centre of mass plus the mass of
    all later links times the next joint's position, in link j's frame (x along the link at
    q = 0, z up). With phi_j = sum_{i <= j} q[joints[i]] (rotation about +y)
    the potential is V = g sum_j (-sin(phi_j) sx_j + cos(phi_j) sz_j), and

        u_ff[joints[k]] = dV/dq_k = -g sum_{j >= k} (cos(phi_j) sx_j + sin(phi_j) sz_j)

    which is MuJoCo's ``qfrc_bias`` at dq = 0 (``test/unit/test_feedforward.py`` checks it to
    1e-9). :func:`gravity_pitch_chain_config` derives the section from an MjModel.

Cost: a few dozen float operations (two cosines per step for the built-in arm); the bench
``bench/bench_feedforward.py`` measures it against the network step and against MuJoCo's own
``mj_forward``-based gravity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "FEEDFORWARD_KINDS",
    "FeedforwardStepper",
    "GravityPitchChain",
    "InputMap",
    "build_feedforward",
    "gravity_pitch_chain_config",
]

FEEDFORWARD_KINDS = ("gravity_pitch_chain",)


def _int_list(name: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a list of integers, got {value!r}")
    if any(v < 0 for v in value):
        raise ValueError(f"{name} must hold indices >= 0, got {value}")
    return list(value)


class GravityPitchChain:
    """u_ff(o): the gravity torque of a pitch chain (module docstring), from its config section."""

    kind = "gravity_pitch_chain"

    def __init__(self, cfg: dict[str, Any]) -> None:
        if not isinstance(cfg, dict):
            raise ValueError(f"feedforward must be a JSON object, got {type(cfg).__name__}")
        self.q_index = _int_list("feedforward.q_index", cfg.get("q_index"))
        self.joints = _int_list("feedforward.joints", cfg.get("joints"))
        if not self.joints or len(set(self.joints)) != len(self.joints):
            raise ValueError(f"feedforward.joints must be distinct joint indices, got {self.joints}")
        if max(self.joints) >= len(self.q_index):
            raise ValueError(
                f"feedforward.joints {self.joints} index beyond q_index ({len(self.q_index)} joints)"
            )
        try:
            m = np.asarray(cfg.get("moments"), dtype=np.float64)
            g = float(cfg.get("gravity", math.nan))
        except (TypeError, ValueError):
            raise ValueError(
                "feedforward.moments must be [[sx, sz], ...] numbers, gravity a number"
            ) from None
        if m.shape != (len(self.joints), 2) or not np.all(np.isfinite(m)):
            raise ValueError(
                f"feedforward.moments must be {len(self.joints)} finite [sx, sz] pairs (kg m), got {m.shape}"
            )
        if not (math.isfinite(g) and g >= 0.0):
            raise ValueError(f"feedforward.gravity must be finite and >= 0 (m/s^2), got {g}")
        self.moments, self.gravity = m, g
        self.n_joints = len(self.q_index)
        self.n_inputs_needed = max(self.q_index) + 1
        self._sx, self._sz = m[:, 0].copy(), m[:, 1].copy()
        self._qi = np.asarray([self.q_index[j] for j in self.joints], dtype=np.intp)
        self._out = np.asarray(self.joints, dtype=np.intp)
        self._sx_l, self._sz_l = self._sx.tolist(), self._sz.tolist()
        self._qi_l, self._out_l = self._qi.tolist(), list(self.joints)
        self.config: dict[str, Any] = {
            "kind": self.kind,
            "q_index": self.q_index,
            "joints": self.joints,
            "moments": m.tolist(),
            "gravity": g,
            **{k: str(cfg[k]) for k in ("source", "note") if k in cfg},  # free text, kept as is
        }

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(n_joints,) N m for one observation (n_obs,), or (..., n_joints) for (..., n_obs)."""
        o = np.asarray(obs, dtype=np.float64)
        if o.ndim == 1:  # the per-step path: plain floats (numpy's per-call overhead dominates here)
            return self.step(o.tolist())
        phi = np.cumsum(o[..., self._qi], axis=-1)
        per_link = -self.gravity * (np.cos(phi) * self._sx + np.sin(phi) * self._sz)
        tau = np.cumsum(per_link[..., ::-1], axis=-1)[..., ::-1]  # sum over j >= k
        out = np.zeros((*o.shape[:-1], self.n_joints))
        out[..., self._out] = tau
        return out

    def step(self, obs: list[float]) -> np.ndarray:
        """(n_joints,) N m for one observation given as a list of floats."""
        g, sx, sz = self.gravity, self._sx_l, self._sz_l
        phi = 0.0
        per_link = []
        for j, qi in enumerate(self._qi_l):
            phi += obs[qi]
            per_link.append(-g * (math.cos(phi) * sx[j] + math.sin(phi) * sz[j]))
        out = [0.0] * self.n_joints
        acc = 0.0
        for j in range(len(per_link) - 1, -1, -1):
            acc += per_link[j]
            out[self._out_l[j]] = acc
        return np.array(out)


def build_feedforward(cfg: dict[str, Any]) -> GravityPitchChain:
    """The feed-forward of a model file's ``feedforward`` section; ValueError says what is wrong."""
    if not isinstance(cfg, dict):
        raise ValueError(f"feedforward must be a JSON object, got {type(cfg).__name__}")
    kind = cfg.get("kind")
    if kind == "gravity_pitch_chain":
        return GravityPitchChain(cfg)
    raise ValueError(f"feedforward.kind {kind!r} is unknown; this code knows {list(FEEDFORWARD_KINDS)}")


class InputMap:
    """z = A o: the network's inputs from the observation (a model file's ``input_map`` section)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        if not isinstance(cfg, dict):
            raise ValueError(f"input_map must be a JSON object, got {type(cfg).__name__}")
        try:
            a = np.asarray(cfg.get("matrix"), dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("input_map.matrix must be a list of rows of numbers") from None
        if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(f"input_map.matrix must be a non-empty finite 2-D array, got shape {a.shape}")
        names = cfg.get("names")
        if names is None:
            names = [f"z{i}" for i in range(a.shape[0])]
        if not isinstance(names, list) or len(names) != a.shape[0]:
            raise ValueError(f"input_map.names must list {a.shape[0]} names, got {names!r}")
        obs_names = cfg.get("observation_names")
        if obs_names is not None and (not isinstance(obs_names, list) or len(obs_names) != a.shape[1]):
            raise ValueError(f"input_map.observation_names must list {a.shape[1]} names, got {obs_names!r}")
        self.matrix = a
        self.names = [str(n) for n in names]
        self.observation_names = None if obs_names is None else [str(n) for n in obs_names]
        self.n_out, self.n_in = a.shape
        self.config: dict[str, Any] = {"names": self.names, "matrix": a.tolist()}
        if self.observation_names is not None:
            self.config["observation_names"] = self.observation_names
        if "note" in cfg:
            self.config["note"] = str(cfg["note"])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(n_out,) for (n_in,), or (..., n_out) for (..., n_in)."""
        return np.asarray(obs, dtype=np.float64) @ self.matrix.T


class FeedforwardStepper:
    """A :class:`~lnn_control.runtime.stepper.PolicyStepper` with its model file's input map and
    feed-forward: ``step(o, dt) = [net.step(A o, dt)[:k] + u_ff(o), gains]`` (module docstring).

    It takes the raw observation the ControlStep gives (``n_inputs``, ``input_names`` of the
    observation mapping) and returns raw commands, so the node, ``ClosedLoop`` and ``evaluate``
    run it like any stepper. Other attributes (``state``, ``units``, ``kernel``, ...) are the
    network's; ``network`` is the wrapped stepper.

    Args:
        network: the residual network's stepper.
        feedforward: config section or None; input_map: config section or None.
    Attributes: ``n_inputs`` / ``input_names`` are the observation's (the input map's width and
    ``observation_names``; the network's without a map); ``feedforward``, ``input_map``.
    """

    def __init__(
        self,
        network: Any,
        feedforward: dict[str, Any] | None = None,
        input_map: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.input_map = InputMap(input_map) if input_map is not None else None
        self.feedforward = build_feedforward(feedforward) if feedforward is not None else None
        n_net = int(network.n_inputs)
        if self.input_map is not None:
            if self.input_map.n_out != n_net:
                raise ValueError(f"input_map gives {self.input_map.n_out} inputs, the network takes {n_net}")
            self.n_inputs = self.input_map.n_in
        else:
            self.n_inputs = n_net
        if self.input_map is None:
            names = list(getattr(network, "input_names", []) or [])
        else:
            names = list(self.input_map.observation_names or [])
        self.input_names = names if len(names) == self.n_inputs else [f"x{i}" for i in range(self.n_inputs)]
        self.n_commands = int(network.n_commands)
        if self.feedforward is not None:
            if self.feedforward.n_joints != self.n_commands:
                raise ValueError(
                    f"feedforward gives {self.feedforward.n_joints} torques, "
                    f"the policy {self.n_commands} commands"
                )
            if self.feedforward.n_inputs_needed > self.n_inputs:
                raise ValueError(
                    f"feedforward.q_index {self.feedforward.q_index} is beyond the {self.n_inputs} inputs"
                )
        self._obs = np.zeros(self.n_inputs)
        self._z = np.zeros(n_net)
        self.observation: dict[str, Any] | None = getattr(network, "observation", None)
        self.metadata: dict[str, Any] = dict(getattr(network, "metadata", {}) or {})

    def __getattr__(self, name: str) -> Any:  # the network's attributes (state, units, kernel, ...)
        if name == "network":
            raise AttributeError(name)
        return getattr(self.network, name)

    @property
    def state(self) -> np.ndarray:
        return self.network.state

    @state.setter
    def state(self, value: Any) -> None:
        self.network.state = value

    def reset(self) -> None:
        self.network.reset()

    def step(self, obs: Any, dt: float) -> np.ndarray:
        """Like ``PolicyStepper.step`` (same ValueErrors naming ``obs`` / ``dt``)."""
        o = self._obs
        if np.ndim(obs) != 1 or np.shape(obs)[0] != self.n_inputs:
            raise ValueError(f"obs must have shape ({self.n_inputs},), got {np.shape(obs)}")
        try:
            o[:] = obs
        except (ValueError, TypeError):
            raise ValueError(f"obs must be {self.n_inputs} numbers") from None
        if not math.isfinite(o.sum()):
            bad = np.flatnonzero(~np.isfinite(o)).tolist()
            raise ValueError(f"obs has NaN/Inf (or overflowing) entries at {bad or 'sum'}")
        if self.input_map is not None:
            np.dot(self.input_map.matrix, o, out=self._z)
            z = self._z
        else:
            z = o
        y = self.network.step(z, dt)
        if self.feedforward is not None:
            y[: self.n_commands] += self.feedforward(o)
        return y


def gravity_pitch_chain_config(model: Any, q_index: list[int] | None = None) -> dict[str, Any]:
    """The ``feedforward`` section for a MuJoCo model (``mujoco.MjModel``) of a serial chain of
    hinge joints, one per body, the first optionally about the world's vertical z axis (no gravity
    torque) and the others about parallel horizontal y axes (a pitch chain in the body's x-z plane).

    ``q_index``: where the joint angles sit in the observation (default 0..nv-1). Raises
    ValueError when the model is not such a chain (nothing else is supported).
    """
    nj = int(model.njnt)
    if nj < 1 or model.nv != nj:
        raise ValueError(f"model must have one hinge per degree of freedom, got njnt={nj}, nv={model.nv}")
    bodies = [int(model.jnt_bodyid[j]) for j in range(nj)]
    for j in range(nj):
        if int(model.jnt_type[j]) != 3:  # mjJNT_HINGE
            raise ValueError(f"joint {j} is not a hinge")
        if j and int(model.body_parentid[bodies[j]]) != bodies[j - 1]:
            raise ValueError("the joints' bodies must form one serial chain, one joint per body")
    if int(model.body_parentid[bodies[0]]) != 0:
        raise ValueError("the chain's first body must hang from the world")
    if np.any(np.abs(model.body_quat[bodies] - np.array([1.0, 0, 0, 0])) > 1e-12):
        raise ValueError("the chain's bodies must not be rotated at q = 0 (body quat = identity)")
    axes = np.asarray(model.jnt_axis, dtype=float)
    gvec = np.asarray(model.opt.gravity, dtype=float)
    if abs(gvec[0]) > 0 or abs(gvec[1]) > 0:
        raise ValueError(f"gravity must point along -z, got {gvec.tolist()}")
    first_pitch = 0
    if np.allclose(axes[0], [0, 0, 1]):
        first_pitch = 1  # a yaw base: no gravity torque, and it does not change heights
    pitch = list(range(first_pitch, nj))
    if not pitch:
        raise ValueError("no pitch joint: the chain has no gravity torque")
    for j in pitch:
        if not np.allclose(axes[j], [0, 1, 0]):
            raise ValueError(f"joint {j} axis {axes[j].tolist()} is not +y (a pitch chain)")
    if first_pitch and np.any(np.abs(model.jnt_pos[0][:2]) > 0):
        raise ValueError("the yaw joint must sit on the z axis of its body")
    for j in pitch:
        if np.any(np.abs(model.jnt_pos[j]) > 0):
            raise ValueError(f"joint {j} must sit at its body's origin")
    # first moments (kg m) per pitch link in its own frame: own mass x com + outboard mass x next origin
    mass = np.asarray(model.body_mass, dtype=float)
    ipos = np.asarray(model.body_ipos, dtype=float)
    pos = np.asarray(model.body_pos, dtype=float)
    later = [bodies[k] for k in range(nj)]
    sub_tree = [b for b in range(int(model.nbody)) if b not in later and b != 0]
    for b in sub_tree:  # any other massive body (a tool without a joint) is not supported here
        if mass[b] > 0 and int(model.body_parentid[b]) != 0:
            raise ValueError(f"body {b} carries mass outside the joint chain; not supported")
    moments = []
    for k in pitch:
        b = bodies[k]
        outboard = sum(mass[bodies[i]] for i in range(k + 1, nj))
        s = mass[b] * ipos[b] + (outboard * pos[bodies[k + 1]] if k + 1 < nj else 0.0)
        if abs(s[1]) > 1e-12:
            raise ValueError(f"body {b} has mass off the chain's x-z plane (y moment {s[1]})")
        moments.append([float(s[0]), float(s[2])])
    return {
        "kind": "gravity_pitch_chain",
        "q_index": list(range(nj)) if q_index is None else [int(i) for i in q_index],
        "joints": pitch,
        "moments": moments,
        "gravity": float(-gvec[2]),
        "source": "gravity_pitch_chain_config(MjModel): body masses and centres of mass of the MJCF",
    }
