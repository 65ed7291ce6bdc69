"""PolicyStepper: one control step of a LiquidPolicy in plain numpy (no torch import).

``PolicyStepper(config, arrays)`` takes the policy config (``LiquidPolicy.get_config()``) and its
state dict as numpy arrays (``LiquidPolicy.numpy_state()`` or a model file) and computes exactly
what ``LiquidPolicy.forward`` computes for one step of batch 1:

    y = stepper.step(obs (n_inputs,) raw, dt s)  ->  (n_outputs,) raw [commands, gains]

Bad input raises ``ValueError`` naming the argument (``obs`` wrong shape or NaN/Inf, ``dt`` <= 0
or non-finite); the state is then left as it was, so the caller can fall back and go on.

Why it is fast (a control loop runs this at every sensor message): every affine map of a step
is folded into one preallocated matrix at construction, and each step runs a fixed list of
numpy calls writing into preallocated buffers (no allocation but the returned copy):

- input and output normalisation, LTC input/output mappings and the LeCun-tanh scales are
  folded into the weights; biases ride along as a constant-1 entry of the input buffer;
- every sigmoid is a tanh of a half-scaled argument, sigma(z) = (1 + tanh(z / 2)) / 2, whose
  halves are folded into weights, so a CfC block needs a single tanh over its fused heads;
- wired CfC: one matmul per layer over a contiguous slice of the buffer [1, x, h_0, 1, h_1, ...]
  (the layer's inputs, its own state and a 1 for its bias); in default mode the state is stored
  doubled, which saves a multiply per layer;
- LTC: per unfold two matmuls over the existing synapses only ([v, 1] -> synapse arguments,
  [tanh, v, 1] -> numerator and denominator with c = cm unfolds / dt on a diagonal that is
  written once per step) and one division.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lnn_control.nn.wiring import Wiring

__all__ = ["PolicyStepper"]

# Above this many entries of the LTC's (synapses x 2N) matrix the sparse kernel is faster (measured:
# AutoNCP(19) 1.8k entries dense wins; AutoNCP(64) 65k entries about even; AutoNCP(256) 8M sparse wins).
_DENSE_LTC_LIMIT = 40_000
# Above this the split kernel (free neurons in closed form, their synapses batched over unfolds) pays off.
_SPLIT_LTC_MIN = 10_000


def _softplus(x: np.ndarray) -> np.ndarray:
    """torch.nn.functional.softplus (beta 1, threshold 20) in numpy."""
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


class PolicyStepper:
    """Stateful single-step runner of a LiquidPolicy (see the module docstring).

    Args:
        config: ``LiquidPolicy.get_config()`` (a JSON-able dict).
        arrays: state-dict name -> numpy array (float64 recommended).
        dtype: ``np.float64`` (matches torch float64 to ~1e-12) or ``np.float32`` (faster on
            large networks, ~1e-6 relative).
        ltc_kernel: LTC synapse sums by one dense matmul (``"dense"``, fastest for small nets),
            by gather + segment sums over the synapse list (``"sparse"``, large nets), or ``"auto"``.
    Attributes:
        n_inputs, n_outputs, n_commands, n_gains, input_names, output_names, gain_names,
        config, observation (mapping from the model file or None), metadata (dict).
    """

    def __init__(
        self,
        config: dict[str, Any],
        arrays: dict[str, np.ndarray],
        dtype: Any = np.float64,
        ltc_kernel: str = "auto",
    ) -> None:
        if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32, got {dtype}")
        self.dtype = np.dtype(dtype)
        self.config = dict(config)
        self.observation: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}
        try:
            self.cell = str(config["cell"])
            self.n_inputs = int(config["n_inputs"])
            self.n_gains = int(config.get("n_gains", 0))
            self.gain_scale = float(config.get("gain_scale", 4.0))
            self.mixed = bool(config.get("mixed_memory", False))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"policy config is missing or has a bad entry: {e}") from None
        self._a = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        self.input_names = list(config.get("input_names") or [f"x{i}" for i in range(self.n_inputs)])
        mean, std = self._get("input_mean", (self.n_inputs,)), self._get("input_std", (self.n_inputs,))
        # x_normalised = x * alpha + beta
        self._alpha, self._beta = 1.0 / std, -mean / std
        self._state_index: np.ndarray | None = None  # set when the state is kept permuted
        if self.cell == "cfc":
            net_out_w, net_out_b, n_net = self._build_cfc()
        elif self.cell == "ltc":
            net_out_w, net_out_b, n_net = self._build_ltc(ltc_kernel)
        else:
            raise ValueError(f"config cell {self.cell!r}: use 'cfc' or 'ltc'")
        self._build_output(net_out_w, net_out_b, n_net)
        self.output_names = list(config.get("output_names") or [f"u{i}" for i in range(self.n_commands)])
        self.gain_names = list(config.get("gain_names") or [f"p{i}" for i in range(self.n_gains)])
        del self._a
        self.reset()

    # --- construction helpers ------------------------------------------------------------
    def _get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in self._a:
            raise ValueError(f"model arrays lack {key!r}")
        a = self._a[key]
        if shape is not None and a.shape != shape:
            raise ValueError(f"model array {key!r} has shape {a.shape}, expected {shape}")
        return a

    def _has(self, key: str) -> bool:
        return key in self._a

    def _wiring(self) -> Wiring | None:
        cfg = self.config.get("wiring")
        return None if cfg is None else Wiring.from_config(cfg)

    def _build_cfc(self) -> tuple[np.ndarray, np.ndarray, int]:
        dt = self.dtype
        n_in = self.n_inputs
        mode = str(self.config.get("mode", "default"))
        if mode not in ("default", "no_gate", "pure"):
            raise ValueError(f"config mode {mode!r} is not a CfC mode")
        self.mode = mode
        L = 0
        while self._has(f"net.cells.{L}.w_in"):
            L += 1
        if L == 0:
            raise ValueError("model arrays hold no CfC block (net.cells.0.w_in)")
        sizes = [self._get(f"net.cells.{k}.w_rec").shape[1] for k in range(L)]
        wiring = self._wiring()
        want = [len(layer) for layer in wiring.layers] if wiring is not None else [self.config.get("units")]
        if sizes != want:
            raise ValueError(f"CfC blocks have {sizes} neurons but the config's wiring/units say {want}")
        N = sum(sizes)
        self.units = N
        # state stored doubled in default mode (saves a multiply per layer)
        self._scale = 2.0 if mode == "default" else 1.0
        # buffer u = [1, x, h_0, 1, h_1, 1, h_2, ...]; slot l starts at h_start[l]
        h_start, pos = [], 1 + n_in
        for k, H in enumerate(sizes):
            if k > 0:
                pos += 1  # the 1 before h_k
            h_start.append(pos)
            pos += H
        u = np.zeros(pos, dtype=dt)
        u[0] = 1.0
        for k in range(1, L):
            u[h_start[k] - 1] = 1.0
        self._u, self._h_start, self._sizes = u, h_start, sizes
        self._x_view = u[1 : 1 + n_in]
        self._h_views = [u[s : s + H] for s, H in zip(h_start, sizes)]
        ops = []
        inv = 1.0 / self._scale
        backbone_layers = (
            int(self.config.get("backbone_layers", 0)) if L == 1 and self.config.get("wiring") is None else 0
        )
        act = str(self.config.get("backbone_activation", "lecun_tanh"))
        for k, H in enumerate(sizes):
            p = f"net.cells.{k}."
            w_in, w_rec, b = self._get(p + "w_in"), self._get(p + "w_rec"), self._get(p + "bias")
            if self._has(p + "in_mask"):
                w_in = w_in * self._get(p + "in_mask", w_in.shape)
            if self._has(p + "rec_mask"):
                w_rec = w_rec * self._get(p + "rec_mask", w_rec.shape)
            R = w_in.shape[0]
            if k == 0:
                lo, hi = 0, 1 + n_in + H
                W = np.zeros((hi - lo, R))
                W[0] = b + w_in @ self._beta
                W[1 : 1 + n_in] = (w_in * self._alpha).T
                W[1 + n_in :] = w_rec.T * inv
            else:
                lo, hi = h_start[k - 1], h_start[k] + H
                W = np.zeros((hi - lo, R))
                Hp = sizes[k - 1]
                W[:Hp] = w_in.T * inv
                W[Hp] = b
                W[Hp + 1 :] = w_rec.T * inv
            stages: list[tuple[np.ndarray, np.ndarray | None, str]] = []
            if backbone_layers > 0:
                # backbone: first affine is W; then Linear layers; then the heads
                lin: list[tuple[np.ndarray, np.ndarray | None]] = [(W, None)]
                j = 0
                while self._has(f"{p}backbone.{j}.weight"):
                    lin.append(
                        (self._get(f"{p}backbone.{j}.weight").T.copy(), self._get(f"{p}backbone.{j}.bias"))
                    )
                    j += 1
                lin.append((self._get(p + "head.weight").T.copy(), self._get(p + "head.bias")))
                if act == "lecun_tanh":  # 1.7159 tanh(0.666 z): 0.666 into this layer, 1.7159 into the next
                    for i in range(len(lin) - 1):
                        wi, bi = lin[i]
                        lin[i] = (wi * 0.666, None if bi is None else bi * 0.666)
                        nxt = lin[i + 1]
                        lin[i + 1] = (nxt[0] * 1.7159, nxt[1])
                    act_name = "tanh"
                else:
                    act_name = act
                for i, (Wi, bi) in enumerate(lin):
                    stages.append((Wi, bi, act_name if i < len(lin) - 1 else "none"))
            heads_w, heads_b = (stages[-1][0], stages[-1][1]) if stages else (W, None)
            heads_w, heads_b = self._head_layout(heads_w, heads_b, H)
            if stages:
                stages[-1] = (heads_w, heads_b, "none")
            else:
                stages = [(heads_w, None, "none")]
            extra: dict[str, np.ndarray] = {}
            if mode == "pure":
                extra["w_tau"] = np.abs(self._get(p + "w_tau", (H,))).astype(dt)
                extra["A"] = self._get(p + "A", (H,)).astype(dt)
            ops.append(
                {
                    "lo": lo,
                    "hi": hi,
                    "stages": [
                        (
                            np.ascontiguousarray(Wi, dtype=dt),
                            None if bi is None else bi.astype(dt),
                            a,
                            np.zeros(Wi.shape[1], dtype=dt),
                        )
                        for Wi, bi, a in stages
                    ],
                    "H": H,
                    **extra,
                }
            )
        self._cfc_ops = ops
        self._tmp = [np.zeros(H, dtype=dt) for H in sizes]
        if self.mixed:
            self._build_lstm("net.lstm.", N, [(s, H) for s, H in zip(h_start, sizes)])
        # output neurons: a contiguous run of the last layer
        last_start = h_start[-1]
        if wiring is None:
            first, n_net = last_start, sizes[-1]
        elif self.config.get("synapses", "wiring") == "ncps":
            first, n_net = last_start, sizes[-1]
        else:
            last = wiring.layers[-1]
            ids = [last.index(i) for i in range(wiring.output_dim)]
            first, n_net = last_start + ids[0], len(ids)
        self._out_view = u[first : first + n_net]
        return np.eye(n_net) * inv, np.zeros(n_net), n_net

    def _head_layout(
        self, w: np.ndarray, b: np.ndarray | None, H: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Reorder fused head columns [ff1, ff2, ta, tb] -> [ff1, ff2, tb/2, ta/2] (tanh form of the gate)."""
        if self.mode == "pure":
            return w, b
        cols = np.concatenate([w[:, : 2 * H], 0.5 * w[:, 3 * H :], 0.5 * w[:, 2 * H : 3 * H]], 1)
        bias = None if b is None else np.concatenate([b[: 2 * H], 0.5 * b[3 * H :], 0.5 * b[2 * H : 3 * H]])
        return cols, bias

    def _build_lstm(self, p: str, N: int, slots: list[tuple[int, int]]) -> None:
        """LSTM before the cell: gates [g, i, f, o] from [1, x, h]; sigmoid rows halved for tanh form."""
        dt = self.dtype
        n_in = self.n_inputs
        w_in, b, w_rec = (
            self._get(p + "w_in", (4 * N, n_in)),
            self._get(p + "bias", (4 * N,)),
            self._get(p + "w_rec"),
        )
        half = np.concatenate([np.ones(N), np.full(3 * N, 0.5)])
        b = b + np.concatenate([np.zeros(2 * N), np.ones(N), np.zeros(N)])  # forget-gate bias +1
        u = self._u
        W = np.zeros((u.size, 4 * N))
        W[0] = (b + w_in @ self._beta) * half
        W[1 : 1 + n_in] = (w_in * self._alpha).T * half
        col = 0
        for s, H in slots:
            W[s : s + H] = w_rec[:, col : col + H].T * half / self._scale
            col += H
        self._lstm_w = W.astype(dt)
        self._lstm_z = np.zeros(4 * N, dtype=dt)
        self._lstm_c = np.zeros(N, dtype=dt)
        self._lstm_slots = slots
        self._lstm_t = np.zeros(N, dtype=dt)

    def _build_ltc(self, ltc_kernel: str) -> tuple[np.ndarray, np.ndarray, int]:
        dt = self.dtype
        n_in = self.n_inputs
        p = "net.cell."
        cm_raw = self._get(p + "cm")
        N = cm_raw.shape[0]
        self.units = N
        self._scale = 1.0
        pos = _softplus if self.config.get("positive", "softplus") == "softplus" else (lambda a: a)
        solver = str(self.config.get("solver", "fused"))
        if solver not in ("fused", "euler", "rk4"):
            raise ValueError(f"config solver {solver!r}: use fused, euler or rk4")
        self.solver = solver
        self.unfolds = int(self.config.get("ode_unfolds", 6))
        eps = float(self.config.get("epsilon", 1e-8))
        gleak, vleak, cm = pos(self._get(p + "gleak", (N,))), self._get(p + "vleak", (N,)), pos(cm_raw)
        sigma, mu, w, erev = (self._get(p + k, (N, N)) for k in ("sigma", "mu", "w", "erev"))
        w = pos(w)
        mask = self._get(p + "sparsity_mask", (N, N))
        wiring = self._wiring()
        if wiring is not None and (wiring.units != N or not np.array_equal(np.abs(wiring.adjacency), mask)):
            raise ValueError("LTC sparsity_mask does not match the config's wiring")
        if wiring is None and self.config.get("units") != N:
            raise ValueError(f"LTC has {N} neurons but the config says units={self.config.get('units')}")
        ssig, smu, sw, serev = (
            self._get(p + k, (n_in, N)) for k in ("sensory_sigma", "sensory_mu", "sensory_w", "sensory_erev")
        )
        sw = pos(sw)
        smask = self._get(p + "sensory_sparsity_mask", (n_in, N))
        iw = self._a.get(p + "input_w", np.ones(n_in))
        ib = self._a.get(p + "input_b", np.zeros(n_in))
        # mapped input x' = x * a + b (normalisation then input mapping)
        a_in, b_in = self._alpha * iw, self._beta * iw + ib
        ssrc, sdst = np.nonzero(smask)
        Ss = ssrc.size
        # sensory: z_k/2 = [1, x] @ Zs ; t = tanh ; [num, den] sums = [t, 1] @ Ms
        Zs = np.zeros((1 + n_in, Ss))
        Zs[0] = 0.5 * ssig[ssrc, sdst] * (b_in[ssrc] - smu[ssrc, sdst])
        Zs[1 + ssrc, np.arange(Ss)] = 0.5 * ssig[ssrc, sdst] * a_in[ssrc]
        swk = sw[ssrc, sdst] * smask[ssrc, sdst]
        Ms = np.zeros((Ss + 1, 2 * N))
        Ms[np.arange(Ss), sdst] = 0.5 * swk * serev[ssrc, sdst]
        Ms[np.arange(Ss), N + sdst] = 0.5 * swk
        src, dst = np.nonzero(mask)
        S = src.size
        wk = w[src, dst] * mask[src, dst]
        # constant row: leak + the 1/2 halves of every sigmoid (sensory and recurrent)
        const_num = gleak * vleak + np.bincount(sdst, 0.5 * swk * serev[ssrc, sdst], N)
        const_num += np.bincount(dst, 0.5 * wk * erev[src, dst], N)
        const_den = gleak + np.bincount(sdst, 0.5 * swk, N) + np.bincount(dst, 0.5 * wk, N)
        if solver == "fused":
            const_den = const_den + eps
        Ms[Ss] = np.concatenate([const_num, const_den])
        self._xs = np.zeros(1 + n_in, dtype=dt)
        self._xs[0] = 1.0
        self._x_view = self._xs[1:]
        self._Zs, self._Ms = Zs.astype(dt), Ms.astype(dt)
        self._ts = np.zeros(Ss + 1, dtype=dt)
        self._ts[Ss] = 1.0
        self._ts_view = self._ts[:Ss]
        # recurrent: u = [t (S), v (N), 1]
        u = np.zeros(S + N + 1, dtype=dt)
        u[-1] = 1.0
        Z = np.zeros((N + 1, S))
        Z[src, np.arange(S)] = 0.5 * sigma[src, dst]
        Z[N] = -0.5 * sigma[src, dst] * mu[src, dst]
        # Dense kernel (small nets): one matmul [t, v, 1] @ M per unfold. Sparse kernel (large nets,
        # where M's S x 2N entries cost more than a dozen O(S) calls): gather, tanh, segment sums.
        if ltc_kernel not in ("auto", "dense", "sparse", "split"):
            raise ValueError(f"ltc_kernel {ltc_kernel!r}: use auto, dense, sparse or split")
        self._sparse = ltc_kernel == "sparse" or (ltc_kernel == "auto" and S * 2 * N > _DENSE_LTC_LIMIT)
        self._split = False
        if ltc_kernel == "split" or (ltc_kernel == "auto" and S * 2 * N > _SPLIT_LTC_MIN):
            has_w = self._has(p + "output_w")
            out_n = int(self._a[p + "output_w"].shape[0]) if has_w else self._wiring_out(N)
            self._split = self._build_ltc_split(src, dst, sigma, mu, wk, erev, cm, Ms, out_n)
            if ltc_kernel == "split" and not self._split:
                raise ValueError(
                    "ltc_kernel 'split' needs the fused solver, no mixed memory, and neurons "
                    "without recurrent inputs feeding a contiguous block (an NCP)"
                )
            if self._split:
                self._sparse = False
                self._out_view = self._vD[:out_n]
                ow = self._a.get(p + "output_w", np.ones(out_n))
                return np.diag(ow), self._a.get(p + "output_b", np.zeros(out_n)), out_n
        self._u, self._Z = u, Z.astype(dt)
        self._S, self._N = S, N
        self._t_view, self._v_view, self._v1_view = u[:S], u[S : S + N], u[S:]
        self._h_views = [self._v_view]
        self._sizes = [N]
        self._nd = np.zeros(2 * N, dtype=dt)
        self._cm = cm.astype(dt)
        self._cm_unf = (cm * self.unfolds).astype(dt)
        self._inv_cm = (1.0 / cm).astype(dt)
        self._work = [np.zeros(N, dtype=dt) for _ in range(6)]
        if self._sparse:
            order = np.lexsort((src, dst))  # by destination: each neuron's synapses are one segment
            so, do = src[order], dst[order]
            self._sp_src = so
            self._sp_a = (0.5 * sigma[so, do]).astype(dt)
            self._sp_b = (-0.5 * sigma[so, do] * mu[so, do]).astype(dt)
            wko = w[so, do] * mask[so, do]
            self._sp_we = (0.5 * wko * erev[so, do]).astype(dt)
            self._sp_w = (0.5 * wko).astype(dt)
            ids, starts = np.unique(do, return_index=True)
            self._sp_starts = starts.astype(np.intp)
            self._sp_K = int(ids.size)
            self._sp_ids = None if np.array_equal(ids, np.arange(ids.size)) else ids
            self._sp_p = [np.zeros(S, dtype=dt) for _ in range(2)]
            self._sp_s = [np.zeros(ids.size, dtype=dt) for _ in range(2)]
            self._M_row = np.zeros(2 * N, dtype=dt)
            self._sp_D = np.zeros(N, dtype=dt)
        else:
            M = np.zeros((S + N + 1, 2 * N))
            M[np.arange(S), dst] = 0.5 * wk * erev[src, dst]
            M[np.arange(S), N + dst] = 0.5 * wk
            self._M = M.astype(dt)
            # diagonal c_i at M[S + i, i] and the constant row M[S + N]: written each step
            self._M_diag = self._M.reshape(-1)[S * 2 * N :: 2 * N + 1][:N]
            self._M_row = self._M[S + N]
        if self.mixed:
            self._build_ltc_lstm(N)
        out = int(self._get(p + "output_w").shape[0]) if self._has(p + "output_w") else self._wiring_out(N)
        ow = self._a.get(p + "output_w", np.ones(out))
        ob = self._a.get(p + "output_b", np.zeros(out))
        self._out_view = self._v_view[:out]
        return np.diag(ow), ob, out

    def _build_ltc_split(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        sigma: np.ndarray,
        mu: np.ndarray,
        wk: np.ndarray,
        erev: np.ndarray,
        cm: np.ndarray,
        Ms: np.ndarray,
        out_n: int,
    ) -> bool:
        """Split kernel for wirings with free neurons (no recurrent inputs, e.g. NCP inter neurons).

        Within a fused step a free neuron follows v_{k+1} = (c v_k + A) / (c + B), i.e.
        v_k = v* + (v_0 - v*) r^k with v* = A / B, r = c / (c + B): its values at every unfold are
        known at once, so all synapses leaving free neurons are evaluated for all unfolds in one
        batch of O(U S_f) calls. Only the synapses among driven neurons stay in the per-unfold loop
        (one small dense matmul each). Returns False when the wiring does not fit.
        """
        N, U, dt = self.units, self.unfolds, self.dtype
        if self.solver != "fused" or self.mixed or src.size == 0:
            return False
        D = np.unique(dst)
        F = np.setdiff1d(np.arange(N), D)
        K, nF = D.size, F.size
        if nF == 0 or not np.array_equal(D[:out_n], np.arange(out_n)):
            return False
        posD = np.full(N, -1)
        posD[D] = np.arange(K)
        posF = np.full(N, -1)
        posF[F] = np.arange(nF)
        from_free = posF[src] >= 0
        if not from_free.any():
            return False
        # feed-forward synapses (free -> driven), sorted by destination: one segment per neuron
        fs, fd = src[from_free], dst[from_free]
        order = np.lexsort((fs, posD[fd]))
        fs, fd = fs[order], fd[order]
        ids, starts = np.unique(posD[fd], return_index=True)
        if not np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
            return False
        sel = np.flatnonzero(from_free)[order]
        self._f_src = posF[fs].astype(np.intp)
        self._f_a = (0.5 * sigma[fs, fd]).astype(dt)
        self._f_b = (-0.5 * sigma[fs, fd] * mu[fs, fd]).astype(dt)
        self._f_we = (0.5 * wk[sel] * erev[fs, fd]).astype(dt)
        self._f_w = (0.5 * wk[sel]).astype(dt)
        self._f_starts = starts.astype(np.intp)
        self._f_off, self._f_K = int(ids[0]), int(ids.size)
        Sf = fs.size
        self._f_G = np.zeros((U, Sf), dtype=dt)
        self._f_G2 = np.zeros((U, Sf), dtype=dt)
        self._f_C = [np.zeros((U, ids.size), dtype=dt) for _ in range(2)]
        # driven loop: uD = [t (Sr), vD (K), 1] ; [vD, 1] @ Zr -> synapse args ; uD @ MD -> [num, den]
        rs, rd = src[~from_free], dst[~from_free]
        sel_r = np.flatnonzero(~from_free)
        Sr = rs.size
        Zr = np.zeros((K + 1, Sr))
        Zr[posD[rs], np.arange(Sr)] = 0.5 * sigma[rs, rd]
        Zr[K] = -0.5 * sigma[rs, rd] * mu[rs, rd]
        MD = np.zeros((Sr + K + 1, 2 * K))
        MD[np.arange(Sr), posD[rd]] = 0.5 * wk[sel_r] * erev[rs, rd]
        MD[np.arange(Sr), K + posD[rd]] = 0.5 * wk[sel_r]
        self._Zr, self._MD = Zr.astype(dt), MD.astype(dt)
        uD = np.zeros(Sr + K + 1, dtype=dt)
        uD[-1] = 1.0
        self._uD, self._tD, self._vD, self._vD1 = uD, uD[:Sr], uD[Sr : Sr + K], uD[Sr:]
        self._ndD = np.zeros(2 * K, dtype=dt)
        self._MD_diag = self._MD.reshape(-1)[Sr * 2 * K :: 2 * K + 1][:K]
        self._MD_last = self._MD[Sr + K]
        self._R = np.zeros((U, 2 * K), dtype=dt)
        # sensory/constant row reordered to [A_D, B_D, A_F, B_F]
        cols = np.concatenate([D, N + D, F, N + F])
        self._Ms = np.ascontiguousarray(Ms[:, cols], dtype=dt)
        self._M_row = np.zeros(2 * N, dtype=dt)
        self._cmu_D = (cm[D] * U).astype(dt)
        self._cmu_F = (cm[F] * U).astype(dt)
        self._vF = np.zeros(nF, dtype=dt)
        self._F_work = [np.zeros(nF, dtype=dt) for _ in range(5)]
        self._F_P = np.zeros((U + 1, nF), dtype=dt)
        self._F_k = np.arange(U + 1, dtype=dt)[:, None]
        self._KF = (K, nF)
        # state (original neuron order) = concat(vD, vF)[index]
        self._h_views = [self._vD, self._vF]
        self._state_index = np.argsort(np.concatenate([D, F]))
        return True

    def _fused_split(self, dt: float) -> None:
        K, nF = self._KF
        row = self._M_row
        A_D_B_D, A_F, B_F = row[: 2 * K], row[2 * K : 2 * K + nF], row[2 * K + nF :]
        inv_dt = 1.0 / dt
        cF, den, r, vs, d = self._F_work
        np.multiply(self._cmu_F, inv_dt, out=cF)
        np.add(cF, B_F, out=den)
        np.divide(cF, den, out=r)
        np.divide(A_F, B_F, out=vs)
        np.subtract(self._vF, vs, out=d)
        P = self._F_P
        np.power(r, self._F_k, out=P)
        P *= d
        P += vs
        self._vF[:] = P[-1]
        G, G2 = self._f_G, self._f_G2
        np.take(P[:-1], self._f_src, axis=1, out=G)
        G *= self._f_a
        G += self._f_b
        np.tanh(G, out=G)
        Cn, Cd = self._f_C
        np.multiply(G, self._f_w, out=G2)
        np.add.reduceat(G2, self._f_starts, axis=1, out=Cd)
        np.multiply(G, self._f_we, out=G2)
        np.add.reduceat(G2, self._f_starts, axis=1, out=Cn)
        R = self._R
        diag = self._MD_diag
        np.multiply(self._cmu_D, inv_dt, out=diag)
        R[:] = A_D_B_D
        R[:, K:] += diag
        o, kf = self._f_off, self._f_K
        R[:, o : o + kf] += Cn
        R[:, K + o : K + o + kf] += Cd
        uD, vD, vD1, tD, ndD = self._uD, self._vD, self._vD1, self._tD, self._ndD
        Zr, MD, last = self._Zr, self._MD, self._MD_last
        num, dd = ndD[:K], ndD[K:]
        for k in range(self.unfolds):
            last[:] = R[k]
            np.dot(vD1, Zr, out=tD)
            np.tanh(tD, out=tD)
            np.dot(uD, MD, out=ndD)
            np.divide(num, dd, out=vD)

    def _wiring_out(self, N: int) -> int:
        w = self._wiring()
        return N if w is None else w.output_dim

    def _build_ltc_lstm(self, N: int) -> None:
        # LSTM input buffer [1, x, v]: x and v are copied in at each step
        dt = self.dtype
        n_in = self.n_inputs
        self._lstm_in = np.zeros(1 + n_in + N, dtype=dt)
        self._lstm_in[0] = 1.0
        p = "net.lstm."
        w_in, b, w_rec = (
            self._get(p + "w_in", (4 * N, n_in)),
            self._get(p + "bias", (4 * N,)),
            self._get(p + "w_rec"),
        )
        half = np.concatenate([np.ones(N), np.full(3 * N, 0.5)])
        b = b + np.concatenate([np.zeros(2 * N), np.ones(N), np.zeros(N)])
        W = np.zeros((1 + n_in + N, 4 * N))
        W[0] = (b + w_in @ self._beta) * half
        W[1 : 1 + n_in] = (w_in * self._alpha).T * half
        W[1 + n_in :] = w_rec.T * half
        self._lstm_w = W.astype(dt)
        self._lstm_z = np.zeros(4 * N, dtype=dt)
        self._lstm_c = np.zeros(N, dtype=dt)
        self._lstm_t = np.zeros(N, dtype=dt)

    def _build_output(self, w_net: np.ndarray, b_net: np.ndarray, n_net: int) -> None:
        """y = out_view @ Wo + bo, with proj, de-normalisation and the gains' half-scale folded in."""
        if self._has("proj.weight"):
            pw, pb = self._get("proj.weight"), self._get("proj.bias")
            if pw.shape[1] != n_net:
                raise ValueError(f"proj.weight has {pw.shape[1]} inputs, the network gives {n_net}")
            Wo, bo = w_net @ pw.T, b_net @ pw.T + pb
        else:
            Wo, bo = w_net, b_net
        n_out = Wo.shape[1]
        self.n_outputs = n_out
        self.n_commands = n_out - self.n_gains
        if not 0 <= self.n_gains < n_out:
            raise ValueError(f"config n_gains={self.n_gains} but the network has {n_out} outputs")
        k = self.n_commands
        om, os_ = self._get("output_mean", (k,)), self._get("output_std", (k,))
        scale = np.concatenate([os_, np.full(self.n_gains, 0.5)])
        shift = np.concatenate([om, np.zeros(self.n_gains)])
        self._Wo = np.ascontiguousarray(Wo * scale, dtype=self.dtype)
        self._bo = (bo * scale + shift).astype(self.dtype)
        self._y = np.zeros(n_out, dtype=self.dtype)
        self._y_gain = self._y[k:]
        self._half_gain = 0.5 * self.gain_scale

    # --- state -------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return self.units * (2 if self.mixed else 1)

    @property
    def state(self) -> np.ndarray:
        """Hidden state (state_size,) float64, ordered as the torch model's (copy on read)."""
        h = np.concatenate(self._h_views) / self._scale
        if self._state_index is not None:
            h = h[self._state_index]
        if self.mixed:
            h = np.concatenate([h, self._lstm_c])
        return h.astype(np.float64)

    @state.setter
    def state(self, value: Any) -> None:
        v = np.asarray(value, dtype=np.float64)
        if v.shape != (self.state_size,) or not np.all(np.isfinite(v)):
            raise ValueError(f"state must be {self.state_size} finite values, got shape {v.shape}")
        if self._state_index is not None:
            h = np.empty(self.units)
            h[self._state_index] = v[: self.units]
            v = np.concatenate([h, v[self.units :]])
        pos = 0
        for view in self._h_views:
            view[:] = v[pos : pos + view.size] * self._scale
            pos += view.size
        if self.mixed:
            self._lstm_c[:] = v[pos:]

    def reset(self) -> None:
        """Zero the hidden state (start of an episode)."""
        for view in self._h_views:
            view[:] = 0.0
        if self.mixed:
            self._lstm_c[:] = 0.0

    # --- step --------------------------------------------------------------------------
    def step(self, obs: Any, dt: float) -> np.ndarray:
        """Advance by ``dt`` seconds with observation ``obs`` (n_inputs,) raw; returns (n_outputs,) raw.

        Raises ValueError naming ``obs`` or ``dt`` on a wrong shape, NaN/Inf or dt <= 0.
        """
        x = self._x_view
        try:
            x[:] = obs
        except (ValueError, TypeError):
            shape = np.shape(obs) if not isinstance(obs, str) else "a string"
            raise ValueError(f"obs must have shape ({self.n_inputs},), got {shape}") from None
        if np.ndim(obs) != 1:
            raise ValueError(f"obs must have shape ({self.n_inputs},), got {np.shape(obs)}")
        if not math.isfinite(x.sum()):
            bad = np.flatnonzero(~np.isfinite(x)).tolist()
            raise ValueError(f"obs has NaN/Inf (or overflowing) entries at {bad or 'sum'}")
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            raise ValueError(f"dt must be a number of seconds, got {dt!r}") from None
        if not (dt > 0.0 and dt < math.inf):
            raise ValueError(f"dt must be finite and > 0 seconds, got {dt}")
        if self.cell == "cfc":
            self._step_cfc(dt)
        else:
            self._step_ltc(dt)
        y = self._y
        np.dot(self._out_view, self._Wo, out=y)
        y += self._bo
        if self.n_gains:
            g = self._y_gain
            np.tanh(g, out=g)
            g += 1.0
            g *= self._half_gain
        return y.copy()

    def _lstm(self, inp: np.ndarray) -> None:
        """Mixed memory: c, h_lstm from [1, x, h] (tanh form); writes h_lstm (scaled) into the h slots."""
        N = self.units
        z = self._lstm_z
        np.dot(inp, self._lstm_w, out=z)
        np.tanh(z, out=z)
        g, i, f, o = z[:N], z[N : 2 * N], z[2 * N : 3 * N], z[3 * N :]
        z[N:] += 1.0
        z[N:] *= 0.5  # sigmoids
        c, t = self._lstm_c, self._lstm_t
        c *= f
        np.multiply(g, i, out=t)
        c += t
        np.tanh(c, out=t)
        t *= o
        pos = 0
        for view in self._h_views:
            np.multiply(t[pos : pos + view.size], self._scale, out=view)
            pos += view.size

    def _step_cfc(self, dt: float) -> None:
        u = self._u
        if self.mixed:
            self._lstm(u)
        mode = self.mode
        for k, op in enumerate(self._cfc_ops):
            H = op["H"]
            z = u[op["lo"] : op["hi"]]
            for W, b, act, out in op["stages"]:
                np.dot(z, W, out=out)
                if b is not None:
                    out += b
                if act == "tanh":
                    np.tanh(out, out=out)
                elif act != "none":
                    _activate(act, out)
                z = out
            P = z
            h = self._h_views[k]
            if mode == "pure":
                t = self._tmp[k]
                np.abs(P, out=t)
                t += op["w_tau"]
                t *= -dt
                np.exp(t, out=t)
                t *= P
                t *= op["A"]
                np.subtract(op["A"], t, out=h)
                continue
            ff1, ff2, tb, ta = P[:H], P[H : 2 * H], P[2 * H : 3 * H], P[3 * H :]
            ta *= dt
            tb += ta
            np.tanh(P[: 3 * H], out=P[: 3 * H])
            if mode == "default":  # 2h = (ff1 + ff2) + t (ff2 - ff1)
                np.subtract(ff2, ff1, out=ta)
                ta *= tb
                np.add(ff1, ff2, out=h)
                h += ta
            else:  # no_gate: h = ff1 + (1 + t) ff2 / 2
                tb += 1.0
                tb *= ff2
                tb *= 0.5
                np.add(ff1, tb, out=h)

    def _step_ltc(self, dt: float) -> None:
        # sensory sums and constants for this step -> constant row of M
        np.dot(self._xs, self._Zs, out=self._ts_view)
        np.tanh(self._ts_view, out=self._ts_view)
        row = self._M_row
        np.dot(self._ts, self._Ms, out=row)
        if self._split:
            self._fused_split(dt)
            return
        if self.mixed:
            li = self._lstm_in
            n_in = self.n_inputs
            li[1 : 1 + n_in] = self._x_view
            li[1 + n_in :] = self._v_view
            self._lstm(li)
        v_view = self._v_view
        N = self._N
        if self._sparse:
            if self.solver == "fused":
                self._fused_sparse(dt)
                return
        elif self.solver == "fused":
            u, Z, M, nd = self._u, self._Z, self._M, self._nd
            t_view, v1 = self._t_view, self._v1_view
            diag = self._M_diag
            np.multiply(self._cm_unf, 1.0 / dt, out=diag)
            row[N:] += diag
            num, den = nd[:N], nd[N:]
            for _ in range(self.unfolds):
                np.dot(v1, Z, out=t_view)
                np.tanh(t_view, out=t_view)
                np.dot(u, M, out=nd)
                np.divide(num, den, out=v_view)
            return
        h = dt / self.unfolds
        w = self._work
        if self.solver == "euler":
            for _ in range(self.unfolds):
                self._deriv(w[0])
                w[0] *= h
                v_view += w[0]
            return
        v0, k, acc = w[1], w[2], w[3]
        for _ in range(self.unfolds):
            v0[:] = v_view
            acc[:] = 0.0
            for c_eval, c_acc in ((0.5, 1.0), (0.5, 2.0), (1.0, 2.0), (None, 1.0)):
                self._deriv(k)
                acc += c_acc * k
                if c_eval is not None:
                    np.multiply(k, c_eval * h, out=v_view)
                    v_view += v0
            np.multiply(acc, h / 6.0, out=v_view)
            v_view += v0

    def _segment_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Sparse kernel: (sum_i w e s_ij, sum_i w s_ij) minus their constant halves, per segment."""
        z = self._t_view
        np.take(self._v_view, self._sp_src, out=z)
        z *= self._sp_a
        z += self._sp_b
        np.tanh(z, out=z)
        p1, p2 = self._sp_p
        s1, s2 = self._sp_s
        np.multiply(z, self._sp_we, out=p1)
        np.multiply(z, self._sp_w, out=p2)
        np.add.reduceat(p1, self._sp_starts, out=s1)
        np.add.reduceat(p2, self._sp_starts, out=s2)
        return s1, s2

    def _fused_sparse(self, dt: float) -> None:
        N, K, ids = self._N, self._sp_K, self._sp_ids
        row, v = self._M_row, self._v_view
        c, D = self._work[4], self._sp_D
        np.multiply(self._cm_unf, 1.0 / dt, out=c)
        np.add(row[N:], c, out=D)
        num, den = self._nd[:N], self._nd[N:]
        den[:] = D
        A = row[:N]
        for _ in range(self.unfolds):
            s1, s2 = self._segment_sums()
            np.multiply(c, v, out=num)
            num += A
            if ids is None:
                num[:K] += s1
                np.add(D[:K], s2, out=den[:K])
            else:
                num[ids] += s1
                den[ids] = D[ids] + s2
            np.divide(num, den, out=v)

    def _deriv(self, out: np.ndarray) -> None:
        """dv/dt at the current v into ``out`` (non-fused solvers; the diagonal of M is zero)."""
        N = self._N
        if self._sparse:
            s1, s2 = self._segment_sums()
            num, den = self._nd[:N], self._nd[N:]
            num[:] = self._M_row[:N]
            den[:] = self._M_row[N:]
            if self._sp_ids is None:
                num[: self._sp_K] += s1
                den[: self._sp_K] += s2
            else:
                num[self._sp_ids] += s1
                den[self._sp_ids] += s2
        else:
            np.dot(self._v1_view, self._Z, out=self._t_view)
            np.tanh(self._t_view, out=self._t_view)
            np.dot(self._u, self._M, out=self._nd)
        np.multiply(self._v_view, self._nd[N:], out=out)
        np.subtract(self._nd[:N], out, out=out)
        out *= self._inv_cm


def _activate(name: str, z: np.ndarray) -> None:
    """Backbone activations other than (LeCun) tanh, in place, as torch defines them."""
    if name == "relu":
        np.maximum(z, 0.0, out=z)
    elif name == "silu":
        z *= 0.5 * (1.0 + np.tanh(0.5 * z))
    elif name == "gelu":  # exact (erf) GELU, torch's default
        z *= 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in z], dtype=z.dtype))
    else:
        raise ValueError(f"backbone activation {name!r} is not supported by the stepper")
