"""BarrierNet safety layer: QP solvers (more modules listed in docs/ARCHITECTURE.md are not done yet)."""

from barriernet.qp import SOLVERS, QPResult, register_solver, solve_qp

__all__ = ["SOLVERS", "QPResult", "register_solver", "solve_qp"]
