"""barriernet: differentiable control-barrier-function QP layers and a run-time safety filter."""
