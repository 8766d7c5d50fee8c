"""Plotting helpers shared by the lessons: 2D points, densities, vector fields, image grids,
and animations that play in the notebook and in the book (HTML/JS, no video codec needed)."""
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from torchvision.utils import make_grid


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def new_axes(n: int = 1, ncols: int | None = None, size: float = 3.2, **kw):
    """A row (or grid) of ``n`` square axes; returns (fig, flat list of axes)."""
    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, **kw)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def scatter2d(ax, x, lim: float | None = 6.0, s: float = 2, alpha: float = 0.5, title=None, **kw):
    """Scatter plot of points with shape (N, 2)."""
    x = _np(x)
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, **kw)
    _square(ax, lim, title)
    return ax


def _grid(lim, n):
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    return xx, yy, torch.stack([xx.flatten(), yy.flatten()], dim=1)


def density2d(ax, log_prob_fn, lim: float = 6.0, n: int = 200, title=None, cmap="magma", **kw):
    """Image of exp(log_prob_fn(points)) on an n x n grid over [-lim, lim]^2."""
    xx, yy, pts = _grid(lim, n)
    with torch.no_grad():
        z = log_prob_fn(pts).exp().reshape(n, n)
    ax.imshow(_np(z), extent=(-lim, lim, -lim, lim), origin="lower", cmap=cmap, **kw)
    _square(ax, lim, title)
    return ax


def quiver2d(ax, vec_fn, lim: float = 6.0, n: int = 21, title=None, normalize: bool = False, **kw):
    """Arrows of a vector field vec_fn(points (M, 2)) -> (M, 2), e.g. a score."""
    xx, yy, pts = _grid(lim, n)
    with torch.no_grad():
        v = _np(vec_fn(pts.float()))
    if normalize:
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-8)
    ax.quiver(_np(xx), _np(yy), v[:, 0].reshape(n, n), v[:, 1].reshape(n, n), **kw)
    _square(ax, lim, title)
    return ax


def _square(ax, lim, title):
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)


def image_grid(x, nrow: int = 8, ax=None, title=None, padding: int = 2):
    """Show images in [-1, 1] with shape (N, C, H, W) as one grid (torchvision's make_grid)."""
    x = torch.as_tensor(x).detach().cpu().float()
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    grid = make_grid((x.clamp(-1, 1) + 1) / 2, nrow=nrow, padding=padding, pad_value=1.0)
    if ax is None:
        cols = min(nrow, len(x))
        fig, ax = plt.subplots(figsize=(0.75 * cols + 0.5, 0.75 * math.ceil(len(x) / nrow) + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def animate(frames, draw, interval: int = 120, figsize=(4, 4), **subplot_kw):
    """An HTML/JS animation: ``draw(ax, frame)`` is called for each element of ``frames``.

    Returns an ``IPython.display.HTML`` object that plays in Jupyter and in the built book.
    """
    from IPython.display import HTML

    frames = list(frames)
    if not frames:
        raise ValueError("animate() needs at least one frame")
    fig, ax = plt.subplots(figsize=figsize, subplot_kw=subplot_kw)

    def update(frame):
        ax.clear()
        draw(ax, frame)
        return []

    anim = animation.FuncAnimation(fig, update, frames=frames, interval=interval, blit=False)
    html = HTML(anim.to_jshtml(default_mode="once"))
    plt.close(fig)
    return html


def wrap(text: str, width: int = 64) -> str:
    """Text for display in a figure: every line (the text's own newlines kept) cut to `width` columns."""
    lines = text.split("\n")
    return "\n".join(line[i:i + width] for line in lines for i in range(0, max(len(line), 1), width))
