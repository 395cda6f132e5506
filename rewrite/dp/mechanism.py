"""Noise: OpenDP's discrete Laplace on exact integers, and the group-release threshold.

Every measurement is an integer (counts, clamped sums in fixed point), so the
noise is OpenDP's ``make_laplace`` over ``i64`` atoms: the discrete Laplace
(geometric) mechanism with OpenDP's exact, constant-time-safe samplers; no
floating-point noise, no ``random``. Each measurement is built for its L1
sensitivity and epsilon, and its own privacy map checks the calibration.
"""
from __future__ import annotations

import math
from functools import lru_cache

import opendp.prelude as dp

dp.enable_features("contrib")

I64_MAX = 2**63 - 1


class NoiseError(Exception):
    """Calibration failed (would spend more than asked, or values out of range)."""


@lru_cache(maxsize=512)
def _vector_laplace(scale: float) -> "dp.Measurement":
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)


def noise_scale(sensitivity: int, epsilon: float) -> float:
    return sensitivity / epsilon


@lru_cache(maxsize=4096)
def _calibrated(sensitivity: int, epsilon: float) -> "dp.Measurement":
    m = _vector_laplace(noise_scale(sensitivity, epsilon))
    spent = m.map(sensitivity)  # OpenDP's own privacy map checks the calibration
    if spent > epsilon * (1 + 1e-9):
        raise NoiseError(f"noise calibration would spend epsilon {spent} > {epsilon}")
    return m


def add_noise(values: list[int], sensitivity: int, epsilon: float) -> list[int]:
    """``values`` plus discrete Laplace noise for L1 ``sensitivity`` at ``epsilon`` (one call, one vector)."""
    if not values:
        return []
    if any(abs(v) > I64_MAX // 2 for v in values):
        raise NoiseError("an exact value is too large for the noise mechanism")
    return list(_calibrated(sensitivity, epsilon)(list(values)))


def release_threshold(sensitivity: int, epsilon: float, delta: float) -> int:
    """Smallest noisy count a group needs to be shown, for (epsilon, delta)-DP of the key set.

    A person adds at most ``sensitivity`` rows (L) and so creates at most L new
    groups, each with a count of at most L. With discrete Laplace of scale b,
    P(L + X >= tau) <= exp(-(tau - L) / b); bounding the chance that any of the
    L new groups shows by delta gives tau = L + b * ln(L / delta).
    """
    b = noise_scale(sensitivity, epsilon)
    return int(math.ceil(sensitivity + b * math.log(sensitivity / delta)))
