"""A procedural stand-in for the Udacity steering-angle data (which is not available here).

Each example is a 3x66x200 image (PilotNet's input size) of a road seen from a car, and a
steering value that is a deterministic function of the road's curvature ``c`` and the car's
lateral offset ``o`` (both drawn uniformly from [-1, 1]):

    steering = 0.6 * c + 0.3 * o        (in [-0.9, 0.9]; std ~0.39)

The image: a sky gradient above a random horizon, a ground gradient below it; a grey road
between two lane lines whose centre follows ``x(z) = W/2 - 40*o*z + 70*c*(1-z)**2`` (``z`` = 1
at the bottom row, 0 at the horizon; the curvature bends the far road, the offset shifts the
near road) and whose half width shrinks with perspective; a dashed centre line on half of the
images; random brightness, contrast and colour tint; 0-3 shadows (dark half-plane bands or
triangles); Gaussian pixel noise. Pixels are float32 in about [0, 1]. Everything is
vectorised over the batch with numpy (no per-pixel Python loops) and seeded.

Example:
    >>> from steering_data import make_dataset, baseline_rmse
    >>> train, test = make_dataset(4000, seed=0), make_dataset(1000, seed=1)
    >>> baseline_rmse(train, test)     # {'zero': ..., 'train_mean': ...} on the test split

Preview (writes a PNG of 8 examples):
    python benchmarks/steering_data.py --preview benchmarks/results/das_steering.samples.png
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.data import TensorDataset

H, W = 66, 200


def steering(curvature: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The target: a fixed linear function of curvature and offset."""
    return 0.6 * curvature + 0.3 * offset


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` uniform draws as a (n, 1, 1) array, to broadcast over rows and columns."""
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


def _shadows(rng: np.random.Generator, n: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A (n, H, W) multiplicative shadow map: up to three bands or triangles per image."""
    shade = np.ones((n, H, W), np.float32)
    for _ in range(3):
        on = rng.random(n) < 0.5
        if not on.any():
            continue
        depth = _u(rng, 0.35, 0.75, n)
        if rng.random() < 0.5:  # a band between two parallel lines at a random angle
            ang = _u(rng, 0, np.pi, n)
            d = np.cos(ang) * (xx - _u(rng, 0, W, n)) + np.sin(ang) * (yy - _u(rng, 0, H, n))
            inside = np.abs(d) < _u(rng, 4, 30, n)
        else:  # a triangle: three half-plane tests on random vertices
            vx, vy = rng.uniform(-20, W + 20, (3, n)), rng.uniform(-10, H + 10, (3, n))
            signs = []
            for a, b in ((0, 1), (1, 2), (2, 0)):
                ex, ey = (vx[b] - vx[a])[:, None, None], (vy[b] - vy[a])[:, None, None]
                signs.append(ex * (yy - vy[a][:, None, None]) - ey * (xx - vx[a][:, None, None]) >= 0)
            inside = (signs[0] == signs[1]) & (signs[1] == signs[2])
        shade = np.where(inside & on[:, None, None], shade * depth, shade)
    return shade


def render(curvature: np.ndarray, offset: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images (n, 3, H, W) float32 for the given curvatures and offsets."""
    n = len(curvature)
    yy = np.arange(H, dtype=np.float32)[None, :, None]
    xx = np.arange(W, dtype=np.float32)[None, None, :]
    horizon = _u(rng, 16, 28, n)
    c, o = curvature.astype(np.float32)[:, None, None], offset.astype(np.float32)[:, None, None]
    z = np.clip((yy - horizon) / (H - horizon), 0.0, 1.0)  # 0 at the horizon, 1 at the bottom row
    ground = yy >= horizon
    centre = W / 2 - 40.0 * o * z + 70.0 * c * (1 - z) ** 2 + _u(rng, -6, 6, n)
    half = 2.0 + _u(rng, 55, 80, n) * z                      # road half width in pixels
    line = 0.6 + 2.2 * z                                      # lane-line half thickness
    dist = np.abs(xx - centre)
    road = ground & (dist < half)
    lines = ground & (np.abs(dist - half) < line)
    dashed = (rng.random(n) < 0.5)[:, None, None] & ground & (dist < 0.5 * line) & \
        (np.sin(14.0 / np.maximum(z, 0.05) + _u(rng, 0, 6.3, n)) > 0)
    sky_top, sky_bot = rng.uniform(0.45, 0.75, (n, 3)), rng.uniform(0.7, 0.95, (n, 3))
    sky_top[:, 2] += 0.2
    gr_far, gr_near = rng.uniform(0.25, 0.55, (n, 3)), rng.uniform(0.15, 0.45, (n, 3))
    road_col = rng.uniform(0.3, 0.5, n)[:, None] + rng.uniform(-0.04, 0.04, (n, 3))
    t_sky = np.clip(yy / horizon, 0, 1)
    img = np.empty((n, 3, H, W), np.float32)
    for ch in range(3):
        sky = sky_top[:, ch, None, None] * (1 - t_sky) + sky_bot[:, ch, None, None] * t_sky
        grd = gr_far[:, ch, None, None] * (1 - z) + gr_near[:, ch, None, None] * z
        px = np.where(ground, grd, sky)
        px = np.where(road, road_col[:, ch, None, None] * (0.85 + 0.3 * z), px)
        px = np.where(lines | dashed, 0.9, px)
        img[:, ch] = px
    img *= _shadows(rng, n, yy, xx)[:, None]
    tint = rng.uniform(0.9, 1.1, (n, 3, 1, 1)).astype(np.float32)
    bright, contrast = _u(rng, 0.6, 1.4, n)[:, None], _u(rng, 0.7, 1.3, n)[:, None]
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    img = ((img - mean) * contrast + mean) * bright * tint
    img += rng.normal(0, 1, img.shape).astype(np.float32) * _u(rng, 0.01, 0.06, n)[:, None]
    return np.clip(img, 0.0, 1.0)


def make_dataset(n: int, seed: int, chunk: int = 500) -> TensorDataset:
    """``n`` (image, steering) pairs as a TensorDataset of float32 tensors ((n,3,66,200), (n,1))."""
    rng = np.random.default_rng(seed)
    curv, off = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    images = np.concatenate([render(curv[i:i + chunk], off[i:i + chunk], rng) for i in range(0, n, chunk)])
    target = steering(curv, off).astype(np.float32)[:, None]
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(target))


def baseline_rmse(train: TensorDataset, test: TensorDataset) -> dict[str, float]:
    """Test RMSE of predicting zero and of predicting the training mean."""
    y_train, y_test = train.tensors[1], test.tensors[1]
    return {"zero": float(y_test.pow(2).mean().sqrt()),
            "train_mean": float((y_test - y_train.mean()).pow(2).mean().sqrt())}


def _preview(path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ds = make_dataset(8, seed=123)
    fig, axes = plt.subplots(4, 2, figsize=(8, 6))
    for ax, (x, y) in zip(axes.flat, zip(*ds.tensors)):
        ax.imshow(x.permute(1, 2, 0).numpy())
        ax.set_title(f"steering {float(y):+.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preview", default="benchmarks/results/das_steering.samples.png")
    _preview(ap.parse_args().preview)
