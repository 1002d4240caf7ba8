"""Evidence that an image is an adversarial input rather than a mislabeled one: pure functions over a batch.

An adversarial copy keeps the pixels of its (correctly labelled) original plus a small L∞ perturbation, and the
network's prediction moves to another class. A mislabeled image has pixels of another class and the network
agrees with its pixels. Four measurements tell the two apart (functions of arrays; the first three also of the
network):

- ``reverse_eps``: the smallest L∞ budget of a few signed-gradient steps *towards the given label*
  (x ← clip(x − α·sign ∇ₓ CE(f(x), label)), stopped as soon as argmax f(x) = label) that restores the label;
  0 where the network already predicts the label, NaN where ``steps``·α is not enough. An attacked image sits
  a short step from its label's region (it was pushed out of it); a clean image of another class does not.
  (Reverse-gradient test; cf. Hu et al., "A new defense against adversarial images: turning a weakness into a
  strength", NeurIPS 2019: natural images need a large perturbation to change class, attacked ones do not.)
- ``noise_flip``: the share of ``draws`` copies x + U(−σ, σ) (clipped to [0, 1], seeded) whose predicted class
  differs from the prediction on x; and ``noise_to_label``, the share whose prediction is the given label.
  Adversarial inputs are unstable under small random noise, natural images are not (Roth, Kilcher, Hofmann,
  "The odds are odd", ICML 2019; Hu et al., 2019).
- pixel-space neighbours: the share of the ``k`` nearest rows in (pooled, mean-centred, unit-norm) pixel space
  that carry the given label (``px_label_share``) or the network's prediction (``px_pred_share``). The network
  disagreeing with what the pixels' neighbours say, while those neighbours side with the label, is a
  disagreement the pixels do not explain: an attacked copy's nearest pixel neighbour is its original.
  Pooling to at most ``max_side`` × ``max_side`` per channel and centring each vector make the sign pattern of an
  L∞ attack (near zero mean per block) and a uniform brightness shift small next to the shape of the image.

Measured on MNIST-5k (bench/results/flags_calibration.md): pixel-space neighbours separate attacked copies from
both flipped labels and the network's own errors; ``reverse_eps`` separates copies from flipped labels only;
``noise_flip`` separates neither (FGSM/PGD copies at ε ≥ 0.1 are as stable as natural errors), so
``core.flags`` records it but does not use it.

- ``noise_level`` / ``noise_z`` (model-free): the image's high-frequency noise level σ̂ (Immerkær's fast
  noise-variance estimator, CVIU 1996) and how far it sits above the training images of the same given label
  (robust z of log σ̂: median / MAD). An L∞ sign perturbation adds pixel-level noise of size ε whether or not it
  fooled the network (on MNIST the background becomes 0 or ε), so this is evidence also for the copies the
  attack failed on; being relative to the class, it does not fire on datasets whose images are naturally noisy.

``adversarial_evidence`` runs all four and returns one column per measurement (the pipeline's flags step
stores them in ``samples.parquet``; ``core.flags`` reads them). The model-based measurements are computed only
for rows the adversarial flag may judge (``judge``: the pipeline passes the held-out rows, or every row with
``--flag-train-adversarial``) where the network's prediction differs from the given label, NaN elsewhere (a
finite ``noise_flip`` marks a measured row); at most ``max_model_rows`` of them, those whose pixel neighbours
side most with the label first (the flag needs that too). Their cost is proportional to the rows judged, not to
n; network passes use ``core.device.rows_per_batch`` rows, so a 224×224 backbone does not need gigabytes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from core.attacks import EvalFrozen
from core.device import resolve_device, rows_per_batch

DEFAULT_STEP = 0.02
DEFAULT_STEPS = 10
DEFAULT_SIGMA = 0.1
DEFAULT_DRAWS = 8


_Frozen = EvalFrozen  # eval mode, parameters frozen, both restored on exit (shared with the attacks)


def reverse_eps(model: nn.Module, x: np.ndarray, target: np.ndarray, *, step: float = DEFAULT_STEP,
                steps: int = DEFAULT_STEPS, device: str | torch.device = "cpu", batch: int | None = None) -> np.ndarray:
    """Smallest L∞ budget t·``step`` (t = 0..``steps``) at which t signed-gradient steps towards ``target``
    make the network predict ``target``: x₀ = x, x_{t+1} = clip₍₀,₁₎(x_t − step·sign ∇ₓ CE(f(x_t), target)).

    Returns float64 (n,): 0 where f(x) already predicts ``target``, t·step at the first step that reaches it,
    NaN where ``steps`` steps do not.
    """
    dev = resolve_device(device)
    out = np.full(len(x), np.nan)
    if len(x) == 0:
        return out
    batch = batch or rows_per_batch(tuple(x.shape[1:]))
    model.to(dev)
    with _Frozen(model), torch.enable_grad():
        for s in range(0, len(x), batch):
            xb = torch.as_tensor(np.asarray(x[s:s + batch]), dtype=torch.float32, device=dev)
            yb = torch.as_tensor(np.asarray(target[s:s + batch]), dtype=torch.long, device=dev)
            res = np.full(len(xb), np.nan)
            for t in range(steps + 1):
                xb = xb.detach().requires_grad_(True)
                logits = model(xb)
                hit = (logits.argmax(1) == yb).cpu().numpy()
                res[np.isnan(res) & hit] = t * step
                if t == steps or not np.isnan(res).any():
                    break
                loss = F.cross_entropy(logits, yb, reduction="sum")
                (grad,) = torch.autograd.grad(loss, xb)
                xb = (xb - step * grad.sign()).clamp(0.0, 1.0)
            out[s:s + len(res)] = res
    return out


@torch.no_grad()
def noise_response(model: nn.Module, x: np.ndarray, pred: np.ndarray, label: np.ndarray, *,
                   sigma: float = DEFAULT_SIGMA, draws: int = DEFAULT_DRAWS, seed: int = 0,
                   device: str | torch.device = "cpu", batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noise_flip, noise_to_label): over ``draws`` seeded copies x + U(−σ, σ) clipped to [0, 1], the share
    predicted differently from ``pred`` and the share predicted as ``label``. float64 (n,) each."""
    dev = resolve_device(device)
    flip, to_label = np.zeros(len(x)), np.zeros(len(x))
    if len(x) == 0 or draws < 1:
        return flip * np.nan, to_label * np.nan
    batch = batch or rows_per_batch(tuple(x.shape[1:]))
    model.to(dev)
    gen = torch.Generator().manual_seed(int(seed))
    with _Frozen(model):
        for s in range(0, len(x), batch):
            xb = torch.as_tensor(np.asarray(x[s:s + batch]), dtype=torch.float32)
            pb = torch.as_tensor(np.asarray(pred[s:s + batch]), dtype=torch.long)
            lb = torch.as_tensor(np.asarray(label[s:s + batch]), dtype=torch.long)
            for _ in range(draws):
                noise = (torch.rand(xb.shape, generator=gen) * 2 - 1) * sigma
                p = model((xb + noise).clamp(0.0, 1.0).to(dev)).argmax(1).cpu()
                flip[s:s + len(xb)] += (p != pb).numpy()
                to_label[s:s + len(xb)] += (p == lb).numpy()
    return flip / draws, to_label / draws


def pixel_vectors(images: np.ndarray, max_side: int = 14, batch: int | None = None) -> np.ndarray:
    """Images (n, C, H, W) → float32 (n, C·h·w): average-pooled to at most ``max_side`` per side, each vector
    mean-centred and scaled to unit L2 norm (constant images map to 0). Pooled ``batch`` rows at a time."""
    if not hasattr(images, "shape"):  # a list; arrays and image stores are read a batch at a time
        images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    batch = batch or rows_per_batch(tuple(images.shape[1:]), cap=4096, budget_values=1 << 24)
    out = []
    for s in range(0, len(images), batch):
        x = torch.as_tensor(np.asarray(images[s:s + batch]), dtype=torch.float32)
        h, w = x.shape[-2:]
        if max(h, w) > max_side:
            x = F.adaptive_avg_pool2d(x, (min(h, max_side), min(w, max_side)))
        v = x.reshape(len(x), -1).numpy().astype(np.float64)
        v -= v.mean(axis=1, keepdims=True)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        out.append(v.astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


IMMERKAER_MASK = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_level(images: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Per-image high-frequency noise level σ̂ (Immerkær, "Fast noise variance estimation", Computer Vision and
    Image Understanding 64(2), 1996):

        σ̂ = √(π/2) · 1 / (6 (W − 2)(H − 2)) · Σ_{x,y} |(I ∗ N)(x, y)|,   N = [[1, −2, 1], [−2, 4, −2], [1, −2, 1]]

    over the (H − 2)(W − 2) interior positions of each channel (a valid convolution), averaged over channels.
    N is the difference of two Laplacians, so it is blind to the smooth structure of an image (constant, linear
    and most edges) and responds to pixel-to-pixel noise: for i.i.d. Gaussian noise of standard deviation σ on a
    smooth image σ̂ ≈ σ. An L∞ sign perturbation (FGSM/PGD) is exactly such pixel-level noise (on MNIST the
    background becomes 0 or ε). Images (n, C, H, W) or (n, H, W) in the units given (the pipeline: [0, 1]);
    returns float64 (n,), NaN where H or W < 3. Read ``batch`` rows at a time (``core.device.rows_per_batch``;
    arrays and image stores alike).
    """
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    shape = tuple(images.shape)
    n = shape[0]
    if len(shape) == 3:
        c, h, w = 1, shape[1], shape[2]
    else:
        c, h, w = shape[1], shape[2], shape[3]
    if h < 3 or w < 3:
        return np.full(n, np.nan)
    batch = batch or rows_per_batch((c, h, w), cap=4096, budget_values=1 << 24)
    kernel = torch.as_tensor(IMMERKAER_MASK, dtype=torch.float64).reshape(1, 1, 3, 3)
    scale = np.sqrt(np.pi / 2.0) / (6.0 * (w - 2) * (h - 2))
    out = np.empty(n)
    for s in range(0, n, batch):
        x = torch.as_tensor(np.asarray(images[s:s + batch]), dtype=torch.float64)
        x = x.reshape(len(x) * c, 1, h, w)
        r = F.conv2d(x, kernel).abs().sum(dim=(1, 2, 3)).reshape(-1, c)
        out[s:s + len(r)] = (scale * r).mean(dim=1).numpy()
    return out


NOISE_FLOOR = 1e-4  # σ̂ below this (a flat image) counts as this level before the logarithm
MIN_SCALE = 0.05  # smallest robust spread of log σ̂ (a class whose reference images all have one noise level)


def noise_z(level: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
            min_rows: int = 5) -> np.ndarray:
    """How far each row's noise level sits above the reference rows of its class, as a robust z-score of log σ̂:

        z = (log σ̂ − median_ref(log σ̂)) / max(1.4826 · MAD_ref(log σ̂), MIN_SCALE)

    with the median and the median absolute deviation (MAD; 1.4826 · MAD estimates the standard deviation of a
    normal sample, Rousseeuw & Croux, JASA 1993) over the ``reference`` rows (the pipeline: training rows;
    default every row) carrying the row's given label; a class with fewer than ``min_rows`` finite reference
    rows uses every reference row. Relative to the class, so it transfers across datasets whose natural noise
    differs (digits on a black background vs photographs). float64 (n,); NaN where σ̂ is NaN."""
    level = np.asarray(level, dtype=np.float64)
    labels = np.asarray(labels)
    ref = np.ones(len(level), bool) if reference is None else np.asarray(reference, dtype=bool)
    logv = np.log(np.maximum(level, NOISE_FLOOR))
    logv[np.isnan(level)] = np.nan
    ok = ref & np.isfinite(logv)
    out = np.full(len(level), np.nan)
    if not ok.any():
        return out

    def stats(sel: np.ndarray) -> tuple[float, float]:
        med = float(np.median(logv[sel]))
        return med, max(1.4826 * float(np.median(np.abs(logv[sel] - med))), MIN_SCALE)

    overall = stats(ok)
    for c in np.unique(labels):
        rows = labels == c
        sel = ok & rows
        med, sc = stats(sel) if sel.sum() >= min_rows else overall
        out[rows] = (logv[rows] - med) / sc
    return out


def class_noise_median(level: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
                       min_rows: int = 5) -> np.ndarray:
    """Per row, the median σ̂ of the reference rows of its class (all reference rows when fewer than
    ``min_rows``): the 'typical level' a row's noise is compared with in ``core.flags``' reasons."""
    level = np.asarray(level, dtype=np.float64)
    labels = np.asarray(labels)
    ref = np.ones(len(level), bool) if reference is None else np.asarray(reference, dtype=bool)
    ok = ref & np.isfinite(level)
    out = np.full(len(level), np.nan)
    if not ok.any():
        return out
    overall = float(np.median(level[ok]))
    for c in np.unique(labels):
        sel = ok & (labels == c)
        out[labels == c] = float(np.median(level[sel])) if sel.sum() >= min_rows else overall
    return out


def pixel_neighbours(images: np.ndarray, *, k: int = 10, max_side: int = 14) -> np.ndarray:
    """int64 (n, min(k, n − 1)): each row's ``k`` nearest other rows in ``pixel_vectors`` space (exact search,
    the row itself excluded), nearest first; (n, 0) when there are fewer than 2 rows."""
    from core.knn import knn

    n = len(images)
    if n < 2:
        return np.zeros((n, 0), np.int64)
    v = pixel_vectors(images, max_side)
    _, idx = knn(v, v, min(k, n - 1), exclude_self=True, device="cpu")
    return np.asarray(idx, dtype=np.int64)


def neighbour_label_shares(idx: np.ndarray, neighbour_labels: np.ndarray, labels: np.ndarray,
                           pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of each row's neighbours ``idx`` whose entry of ``neighbour_labels`` is the row's ``labels`` /
    its ``pred``): float64 (n,) each, NaN for rows without neighbours. ``neighbour_labels`` is the given labels
    for the measurement, or labels after a cleaning step (``core.flags`` relabels the rows it flags)."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[1] == 0:
        return np.full(len(labels), np.nan), np.full(len(labels), np.nan)
    nl = np.asarray(neighbour_labels)[idx]
    return (nl == np.asarray(labels)[:, None]).mean(1), (nl == np.asarray(pred)[:, None]).mean(1)


def pixel_neighbour_shares(images: np.ndarray, labels: np.ndarray, pred: np.ndarray, *, k: int = 10,
                           max_side: int = 14, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(px_label_share, px_pred_share): among each row's ``k`` nearest other rows in ``pixel_vectors`` space
    (``pixel_neighbours``; or the given ``idx``), the share whose given label is the row's label / the network's
    prediction for the row. float64 (n,) each; NaN when there are fewer than 2 rows."""
    if idx is None:
        idx = pixel_neighbours(images, k=k, max_side=max_side)
    return neighbour_label_shares(idx, labels, labels, pred)


def evidence_row_cap(image_shape: tuple[int, ...], rows_at_32: int = 5000, floor: int = 200) -> int:
    """How many rows get the network-based measurements: ``rows_at_32`` for images of up to 3×32×32 values,
    proportionally fewer for larger ones (their network passes cost about that much more), at least ``floor``:
    5,000 for MNIST/CIFAR, 200 for 224×224 RGB."""
    values = 1
    for d in image_shape:
        values *= max(int(d), 1)
    return max(int(floor), min(int(rows_at_32), int(rows_at_32) * 3 * 32 * 32 // values))


def adversarial_evidence(model: nn.Module | None, images: np.ndarray, labels: np.ndarray, pred: np.ndarray, *,
                         k: int = 10, step: float = DEFAULT_STEP, steps: int = DEFAULT_STEPS,
                         sigma: float = DEFAULT_SIGMA, draws: int = DEFAULT_DRAWS, seed: int = 0,
                         device: str | torch.device = "cpu", judge: np.ndarray | None = None,
                         max_model_rows: int | None = None, reference: np.ndarray | None = None,
                         pixel_idx: np.ndarray | None = None) -> pd.DataFrame:
    """All measurements for every row: ``reverse_eps``, ``noise_flip``, ``noise_to_label`` (rows in ``judge``,
    default every row, where ``pred ≠ labels``, at most ``max_model_rows`` of them; NaN elsewhere, and
    everywhere when there is no network, e.g. ``--pred-probs``), ``px_label_share`` and ``px_pred_share``
    (every row), and the model-free ``noise_level`` (Immerkær σ̂) and ``noise_z`` (its robust z-score within
    the ``reference`` rows of the row's class; the pipeline passes the training rows, default every row).
    ``pixel_idx``: the rows' pixel neighbours (``pixel_neighbours``) when already computed."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    n = len(labels)
    if judge is not None and len(judge) != n:
        raise ValueError(f"judge has {len(judge)} rows, the table {n}")
    rev, flip, to_label = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if reference is not None and len(reference) != n:
        raise ValueError(f"reference has {len(reference)} rows, the table {n}")
    px_label, px_pred = pixel_neighbour_shares(images, labels, pred, k=k, idx=pixel_idx)
    level = noise_level(images)
    level_z = noise_z(level, labels, reference)
    mask = pred != labels
    if judge is not None:
        mask &= np.asarray(judge, dtype=bool)
    dis = np.flatnonzero(mask)
    if max_model_rows is not None and len(dis) > max_model_rows:  # the pixel side of the flag first
        order = np.lexsort((dis, px_pred[dis], -px_label[dis]))
        dis = np.sort(dis[order[:max(int(max_model_rows), 0)]])
    if len(dis) and model is not None:
        from core.data.image_store import take_rows

        x_dis = take_rows(images, dis)  # a lazy view of an image store: read a batch at a time
        rev[dis] = reverse_eps(model, x_dis, labels[dis], step=step, steps=steps, device=device)
        flip[dis], to_label[dis] = noise_response(model, x_dis, pred[dis], labels[dis], sigma=sigma,
                                                  draws=draws, seed=seed, device=device)
    return pd.DataFrame({"reverse_eps": rev, "noise_flip": flip, "noise_to_label": to_label,
                         "px_label_share": px_label, "px_pred_share": px_pred, "noise_level": level,
                         "noise_z": level_z})
