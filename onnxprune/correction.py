"""Per-channel statistics correction after pruning, pure numpy, one layer.

For a layer ``y = W x + b`` (``W`` (out, K), one conv group's rows reading that group's K
columns) the calibration statistics give the input mean ``m = E[x]`` and correlation
``E[x x^T]`` per group, hence its covariance ``C = E[x x^T] - m m^T``. Each output row ``i``
then has, in the dense and in the pruned layer,

    mean  mu_i  = w_i . m + b_i              mu'_i  = w'_i . m + b'_i
    var   v_i   = w_i C w_i^T                v'_i   = w'_i C w'_i^T

The correction scales the pruned row by ``s_i = sqrt(v_i / v'_i)`` (clipped to
[``1 / MAX_SCALE``, ``MAX_SCALE``]; 1 where either variance is negligible) and sets the bias so
the mean is the dense one: ``s_i w'_i . m + b''_i = mu_i``, i.e. the bias change from the
original ``b_i`` is ``(w_i - s_i w'_i) . m``. Both moments of every output channel then equal
the dense layer's on the calibration inputs (what BatchNorm re-estimation would restore, were
BN not folded into the weights).

Shapes: ``mean`` (G, K), ``xtx`` (G, K, K) = sum over the ``count`` samples of ``x x^T``;
rows of group ``g`` are ``g * out / G ... (g + 1) * out / G - 1``.
"""

from __future__ import annotations

import numpy as np

# s is kept within [1 / MAX_SCALE, MAX_SCALE]: a row whose pruned variance collapsed is not
# blown up to match it (its few remaining weights would carry noise).
MAX_SCALE = 2.0
# A variance below this share of the layer's largest dense row variance counts as zero.
RELATIVE_FLOOR = 1e-10


def input_covariance(mean: np.ndarray, xtx: np.ndarray, count: float) -> np.ndarray:
    """Covariance of the inputs per group, (G, K, K), from ``E[x x^T] - m m^T``."""
    second = xtx / max(count, 1.0)
    covariance: np.ndarray = second - mean[:, :, None] * mean[:, None, :]
    return covariance


def row_variances(
    weight: np.ndarray, mean: np.ndarray, xtx: np.ndarray, count: float
) -> np.ndarray:
    """``w_i C_g w_i^T = w_i E[x x^T] w_i^T - (w_i . m)^2`` per row, (out,): the variance of
    each output over the samples, without forming ``C`` (a K x K pass per call)."""
    groups = xtx.shape[0]
    rows, columns = weight.shape
    # float32 product (half the time of float64): the result only sets a scale clipped to
    # [1 / MAX_SCALE, MAX_SCALE]; the mean term is float64.
    grouped = weight.astype(np.float32).reshape(groups, rows // groups, columns)  # (G, Rg, K)
    product = grouped @ xtx.astype(np.float32)
    second = np.einsum("grk,grk->gr", product, grouped, dtype=np.float64) / max(count, 1.0)
    first = np.einsum("grk,gk->gr", grouped, mean, dtype=np.float64)
    # Rounding can leave a tiny negative value where the variance is 0.
    return np.maximum((second - first * first).reshape(rows), 0.0)


def correction_scales(
    dense_var: np.ndarray, pruned_var: np.ndarray, max_scale: float = MAX_SCALE
) -> np.ndarray:
    """``sqrt(v / v')`` per row, clipped; 1 where either variance is negligible."""
    floor = RELATIVE_FLOOR * max(float(dense_var.max(initial=0.0)), 0.0)
    usable = (dense_var > floor) & (pruned_var > floor)
    ratio = np.where(usable, dense_var / np.where(usable, pruned_var, 1.0), 1.0)
    scales: np.ndarray = np.clip(np.sqrt(ratio), 1.0 / max_scale, max_scale)
    return scales


def stat_correct(
    weight: np.ndarray,
    pruned: np.ndarray,
    mean: np.ndarray,
    xtx: np.ndarray,
    count: float,
    max_scale: float = MAX_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """(corrected pruned matrix (out, K), bias change (out,) from the *original* bias).

    ``weight`` is the dense matrix, ``pruned`` the pruned (and possibly re-fitted) one; the
    zeros of ``pruned`` stay zero. The bias change replaces whatever compensation the pruning
    step computed: with it, each output's mean over the calibration inputs is the dense one.
    """
    rows = weight.shape[0]
    dense_var = row_variances(weight, mean, xtx, count)
    pruned_var = row_variances(pruned, mean, xtx, count)
    scales = correction_scales(dense_var, pruned_var, max_scale)
    corrected = pruned * scales[:, None]
    expanded = np.repeat(mean, rows // mean.shape[0], axis=0)  # (out, K)
    delta: np.ndarray = ((weight - corrected) * expanded).sum(axis=1)
    return corrected.astype(pruned.dtype, copy=False), delta


# --refit-steps: the objective of the conjugate-gradient re-fit is taken on the centred inputs
# (the bias, re-set to the residual mean afterwards, absorbs the mean exactly), not on OBS's
# uncentred E[x x^T]. EXPERIMENT switch: False measures the uncentred objective.
CG_CENTERED = True
CG_DAMPING = 0.01  # as ``hessian.DAMPING``: a share of the mean diagonal


def damped_hessians(mean: np.ndarray, xtx: np.ndarray, count: float, centered: bool) -> np.ndarray:
    """(G, K, K): ``E[x x^T]`` (or the covariance), dead inputs' diagonal set to the mean
    diagonal, plus ``CG_DAMPING`` times the mean diagonal (the OBS update's damping)."""
    hessian = input_covariance(mean, xtx, count) if centered else xtx / max(count, 1.0)
    hessian = hessian.copy()
    for g in range(hessian.shape[0]):
        diagonal = np.diag(hessian[g]).copy()
        dead = diagonal <= 0
        scale = float(np.mean(diagonal[~dead])) if (~dead).any() else 1.0
        diagonal[dead] = scale
        hessian[g][np.diag_indices_from(hessian[g])] = diagonal + CG_DAMPING * scale
    return hessian


def refit_on_support(
    weight: np.ndarray,
    start: np.ndarray,
    keep: np.ndarray,
    hessian: np.ndarray,
    steps: int,
) -> np.ndarray:
    """Preconditioned conjugate gradient on ``sum_i (w'_i - w_i) H_g (w'_i - w_i)^T`` over the
    weights ``keep`` marks, from ``start`` (the OBS update's result), batched over rows and
    conv groups. ``weight``, ``start``, ``keep``: (out, K); ``hessian``: (G, K, K). Each step
    costs one (out, K) x (K, K) product. Returns (out, K) float64, zero outside ``keep``."""
    groups, columns = hessian.shape[0], weight.shape[1]
    shape = (groups, weight.shape[0] // groups, columns)
    target = weight.astype(np.float64).reshape(shape)
    mask = keep.reshape(shape)
    x = np.where(mask, start.astype(np.float64).reshape(shape), 0.0)
    diagonal = np.einsum("gkk->gk", hessian)[:, None, :]  # Jacobi preconditioner (G, 1, K)
    residual = np.where(mask, (target - x) @ hessian, 0.0)  # minus half the gradient
    z = residual / diagonal
    direction = z.copy()
    rz = (residual * z).sum(axis=2, keepdims=True)
    for _ in range(steps):
        product = np.where(mask, direction @ hessian, 0.0)
        curvature = (direction * product).sum(axis=2, keepdims=True)
        alpha = np.where(curvature > 0, rz / np.where(curvature > 0, curvature, 1.0), 0.0)
        x += alpha * direction
        residual -= alpha * product
        z = residual / diagonal
        rz_next = (residual * z).sum(axis=2, keepdims=True)
        beta = np.where(rz > 0, rz_next / np.where(rz > 0, rz, 1.0), 0.0)
        direction = z + beta * direction
        rz = rz_next
    return x.reshape(weight.shape)
