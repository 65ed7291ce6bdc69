"""Step kernels of :class:`~lnn_control.runtime.stepper.PolicyStepper`, chosen by name from KERNELS.

Every kernel computes the same function (the torch policy's step; the tests compare each with
torch and with the reference kernel), with buffers laid out for one kind of network:

========================  ==========================================================
``cfc_default``           CfC, gated (``mode: default``)
``cfc_no_gate``           CfC without the 1 - t gate (``mode: no_gate``)
``cfc_pure``              CfC, direct ODE solution (``mode: pure``)
``cfc_jit``               CfC, any mode, one numba-compiled call per step (float64, no
                          backbone, no mixed memory; numba installed)
``ltc_dense``             LTC, one dense matmul per unfold (reference; small nets)
``ltc_sparse``            LTC, gather + segment sums over the synapse list (large nets)
``ltc_split``             LTC, free neurons in closed form (NCP wirings, fused solver)
========================  ==========================================================

``auto`` (:func:`choose_kernel`): ``cfc_jit`` where it runs the policy, else the CfC kernel of
the policy's mode; for an LTC with S synapses and N neurons, ``ltc_split`` where S x 2N > 10k
and the wiring allows it, else ``ltc_sparse`` where S x 2N > 40k, else ``ltc_dense``.
"""

from __future__ import annotations

from lnn_control.runtime.kernels.base import KernelMismatch, PolicySpec, StepKernel
from lnn_control.runtime.kernels.cfc import CfcDefault, CfcNoGate, CfcPure
from lnn_control.runtime.kernels.cfc_jit import CfcJit
from lnn_control.runtime.kernels.ltc import LtcDense, LtcSparse, LtcSplit, synapse_count

__all__ = ["KERNELS", "KernelMismatch", "PolicySpec", "StepKernel", "build_kernel"]

KERNELS: dict[str, type[StepKernel]] = {
    k.name: k for k in (CfcDefault, CfcNoGate, CfcPure, LtcDense, LtcSparse, LtcSplit, CfcJit)
}
#: reference kernel per cell: the one the others are tested against
REFERENCE = {"cfc": "cfc_default", "ltc": "ltc_dense"}

# Above this many entries of the LTC's (synapses x 2N) matrix the sparse kernel is faster (measured:
# AutoNCP(19) 1.8k entries dense wins; AutoNCP(64) 65k entries about even; AutoNCP(256) 8M sparse wins).
_DENSE_LTC_LIMIT = 40_000
# Above this the split kernel (free neurons in closed form, their synapses batched over unfolds) pays off.
_SPLIT_LTC_MIN = 10_000
_CFC_MODES = {k.mode: k.name for k in (CfcDefault, CfcNoGate, CfcPure)}


def choose_kernel(spec: PolicySpec) -> list[str]:
    """``auto``: the kernel names to try for this policy, best first."""
    if spec.cell == "cfc":
        mode = str(spec.config.get("mode", "default"))
        if mode not in _CFC_MODES:
            raise ValueError(f"config mode {mode!r} is not a CfC mode; use one of {list(_CFC_MODES)}")
        return [CfcJit.name, _CFC_MODES[mode]]
    if spec.cell == "ltc":
        n = spec.get("net.cell.cm").shape[0]
        size = synapse_count(spec) * 2 * n
        names = ["ltc_split"] if size > _SPLIT_LTC_MIN else []
        return [*names, "ltc_sparse" if size > _DENSE_LTC_LIMIT else "ltc_dense"]
    raise ValueError(f"config cell {spec.cell!r}: use 'cfc' or 'ltc'")


def build_kernel(spec: PolicySpec, kernel: str = "auto") -> StepKernel:
    """The kernel ``kernel`` (a name in KERNELS, or ``auto``) built for ``spec``.

    Raises ValueError naming ``kernel`` when the name is unknown or the kernel cannot run this
    policy, and naming the config entry or array when the policy itself is wrong.
    """
    if kernel == "auto":
        names = choose_kernel(spec)
        for name in names[:-1]:
            try:
                return KERNELS[name](spec)
            except KernelMismatch:
                continue  # e.g. ltc_split on a wiring without free neurons: the next best
        return KERNELS[names[-1]](spec)
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r} is unknown; use one of {['auto', *KERNELS]}")
    if spec.cell not in REFERENCE:
        raise ValueError(f"config cell {spec.cell!r}: use 'cfc' or 'ltc'")
    try:
        return KERNELS[kernel](spec)
    except KernelMismatch as e:
        fits = [n for n in KERNELS if n.startswith(spec.cell)]
        raise ValueError(
            f"kernel {kernel!r} cannot run this policy: {e}; use 'auto' or a {spec.cell} kernel {fits}"
        ) from None
