"""A model of data-parallel scaling (never a measurement): ring all-reduce with alpha-beta costs.

Per step, a ring all-reduce of S bytes over n workers takes 2(n-1) alpha + 2(n-1)/n * S / B.
Efficiency = T / (T + t_comm) when communication never overlaps compute (a lower bound), and
T / max(T, t_comm) when it all overlaps (an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    nodes: int
    comm_s: float
    efficiency_no_overlap: float
    efficiency_full_overlap: float


GRADIENT_BYTES = 4  # fp32 gradients; 2 with fp16 compression


def ring_allreduce_seconds(nbytes: float, nodes: int, bandwidth_gbps: float, latency_us: float) -> float:
    if nodes <= 1:
        return 0.0
    return 2 * (nodes - 1) * latency_us * 1e-6 + 2 * (nodes - 1) / nodes * nbytes / (bandwidth_gbps * 1e9)


def predict(params: float, step_s: float, nodes: int, bandwidth_gbps: float, latency_us: float,
            bytes_per_param: int = GRADIENT_BYTES) -> Prediction:
    comm = ring_allreduce_seconds(params * bytes_per_param, nodes, bandwidth_gbps, latency_us)
    return Prediction(nodes, comm, step_s / (step_s + comm), step_s / max(step_s, comm))
