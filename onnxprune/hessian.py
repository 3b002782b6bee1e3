"""The inverse-Hessian factor of a layer's reconstruction problem, pure numpy.

For ``min ||W x - W' x||^2`` over the calibration inputs, ``H = 2 X X^T / N`` (from ``xtx =
sum_n x x^T``, (K, K)), damped by a share of its mean diagonal; ``reconstruct`` walks the
columns with the upper Cholesky factor ``U`` of ``H^-1``. The factor depends only on a layer's
inputs, so it is computed once per layer (per conv group) and reused for every candidate mask.
"""

from __future__ import annotations

import numpy as np

DAMPING = 0.01


def damped_diagonal(xtx: np.ndarray, count: float) -> np.ndarray:
    """(K,) diagonal of the damped ``H = 2 xtx / N`` that ``inverse_hessian_factor`` inverts."""
    diagonal = 2.0 * np.diag(xtx).astype(np.float64) / max(count, 1.0)
    diagonal[diagonal == 0] = 1.0
    result: np.ndarray = diagonal + DAMPING * float(np.mean(diagonal))
    return result


class ReconstructionError(ValueError):
    """The Hessian could not be factorised even with damping."""


def inverse_hessian_factor(xtx: np.ndarray, count: float) -> tuple[np.ndarray, np.ndarray]:
    """(U, dead): U the upper Cholesky factor of the damped H^-1; dead the all-zero inputs."""
    hessian = 2.0 * xtx / max(count, 1.0)
    diagonal = np.diag(hessian).copy()
    dead = diagonal == 0
    hessian[dead, dead] = 1.0
    diagonal[dead] = 1.0
    damp = DAMPING * float(np.mean(diagonal))
    reverse = slice(None, None, -1)
    for attempt in range(6):
        try:
            damped = hessian + (damp * 10**attempt) * np.eye(hessian.shape[0])
            # Cholesky of the index-reversed H gives H = R R^T with R upper triangular, so
            # H^-1 = (R^-1)^T R^-1 and U = R^-1 is the upper factor wanted: one Cholesky and one
            # triangular inverse instead of inverting H and factorising again.
            lower = np.linalg.cholesky(np.ascontiguousarray(damped[reverse, reverse]))
            upper_r = lower[reverse, reverse]
            return np.linalg.inv(upper_r), dead
        except np.linalg.LinAlgError:
            continue
    raise ReconstructionError("the input correlation is not positive definite even with damping")


def inverse_hessian_factors(xtx: np.ndarray, count: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """``inverse_hessian_factor`` of every conv group's correlation at once, ``xtx`` (G, K,
    K): one batched Cholesky and triangular inverse instead of G of each (a depthwise layer
    has hundreds of 9 x 9 or 25 x 25 problems); a wide layer's triangle is inverted by
    blocks (``_upper_inverse``). Groups whose damped H is not positive definite fall back
    to ``inverse_hessian_factor``'s growing damping, one by one."""
    # At most about three (G, K, K) float64 arrays live at once, each step dropping what the
    # next does not read (was six): a K = 1536 layer's copy is 19 MB, and layers are
    # factorised two at a time (``threads.map_layers``). The same values as before.
    hessian = 2.0 * np.asarray(xtx, dtype=np.float64) / max(count, 1.0)
    diagonal = np.diagonal(hessian, axis1=1, axis2=2).copy()  # (G, K)
    dead = diagonal == 0
    groups, columns = np.nonzero(dead)
    diagonal[dead] = 1.0
    damp = DAMPING * diagonal.mean(axis=1)  # (G,)
    # The damped H in place: dead inputs' diagonal set to 1, then damp added on it.
    hessian[groups, columns, columns] = 1.0
    np.einsum("gkk->gk", hessian)[...] += damp[:, None]
    # As in ``inverse_hessian_factor``: the index-reversed Cholesky gives the upper R.
    reversed_damped = np.ascontiguousarray(hessian[:, ::-1, ::-1])
    del hessian
    try:
        lower = np.linalg.cholesky(reversed_damped)
    except np.linalg.LinAlgError:
        return [inverse_hessian_factor(x, count) for x in xtx]
    del reversed_damped
    upper_r = lower[:, ::-1, ::-1]
    if upper_r.shape[0] == 1:
        upper = np.ascontiguousarray(upper_r[0])
        del upper_r, lower
        inverses = _upper_inverse(upper)[None]
    else:
        inverses = np.linalg.inv(upper_r)
    return [(inverses[g], dead[g]) for g in range(inverses.shape[0])]


def _upper_inverse(upper: np.ndarray, base: int = 256) -> np.ndarray:
    """Inverse of an upper-triangular matrix by 2 x 2 blocks (the off-diagonal block is
    ``-A^-1 B D^-1``): matrix products instead of a general inverse, about 3x faster at K =
    1536."""
    n = upper.shape[0]
    if n <= base:
        return np.linalg.inv(upper)
    half = n // 2
    top = _upper_inverse(upper[:half, :half], base)
    bottom = _upper_inverse(upper[half:, half:], base)
    result = np.zeros_like(upper)
    result[:half, :half] = top
    result[half:, half:] = bottom
    result[:half, half:] = -(top @ upper[:half, half:]) @ bottom
    return result
