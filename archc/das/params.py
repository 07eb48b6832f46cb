"""Search parameters of differentiable architecture search (Shin, Packer & Song), as weight
parametrizations: the conv stays an ``nn.Conv2d`` to every archc rule, its ``weight`` is
computed from the original weight and the search parameters.

* ``KernelMask``: filter sizes. One weight of the largest size; each candidate size
  ``(h, w)`` (heights and widths independent) is a centred window with a parameter
  ``alpha``; each tap is scaled by the sum of the alphas of the windows covering it.
* ``ChannelSelect``: input channels. ``beta`` scales each input channel of one consumer
  (optionally through sparsemax, rescaled so that all-equal betas give 1).
* ``GroupedConnectivity``: grouped convolutions. ``P`` (inputs x patterns) and ``S``
  (patterns x outputs) scale the weight by ``(P @ S)[i, o]``.

Example:
    >>> torch.nn.utils.parametrize.register_parametrization(conv, "weight", KernelMask((5, 5)))
"""
from __future__ import annotations

import itertools
from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize


def centred_window(size: int, full: int) -> slice:
    """Where a kernel of ``size`` taps sits inside ``full`` taps (the extra tap goes after)."""
    start = (full - size) // 2
    return slice(start, start + size)


class KernelMask(nn.Module):
    """Filter-size search: ``weight * sum(alpha_s * window_s)`` over candidate sizes ``s``."""

    def __init__(self, kernel_size: Sequence[int], sizes: Optional[Sequence[Sequence[int]]] = None) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.sizes = [tuple(s) for s in sizes] if sizes else list(itertools.product(*(range(1, k + 1) for k in self.kernel_size)))
        masks = torch.zeros(len(self.sizes), *self.kernel_size)
        for i, size in enumerate(self.sizes):
            masks[(i, *(centred_window(s, k) for s, k in zip(size, self.kernel_size)))] = 1.0
        self.register_buffer("windows", masks)
        alpha = torch.zeros(len(self.sizes))
        alpha[self.sizes.index(self.kernel_size)] = 1.0  # start as the unmasked conv
        self.alpha = nn.Parameter(alpha)

    def taps(self) -> torch.Tensor:
        """The scale of every kernel tap."""
        return torch.tensordot(self.alpha, self.windows, dims=1)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.taps()

    def window_areas(self) -> torch.Tensor:
        """Each candidate window's share of the full kernel's taps (1 for the full size)."""
        return self.windows.flatten(1).mean(1)

    def select(self, keep_in, keep_out) -> dict:
        return {}  # no channel dims


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Martins & Astudillo's sparsemax of a vector: a sparse probability vector."""
    sorted_z, _ = torch.sort(z, descending=True)
    k = torch.arange(1, len(z) + 1, dtype=z.dtype, device=z.device)
    cumsum = sorted_z.cumsum(0)
    support = (1 + k * sorted_z) > cumsum
    k_z = support.nonzero().max() + 1
    tau = (cumsum[k_z - 1] - 1) / k_z
    return (z - tau).clamp_min(0)


class ChannelSelect(nn.Module):
    """Input-channel search for one consuming layer: ``weight[:, i] * beta_i``."""

    def __init__(self, in_channels: int, use_sparsemax: bool = False) -> None:
        super().__init__()
        self.use_sparsemax = use_sparsemax
        self.beta = nn.Parameter(torch.ones(in_channels) / (in_channels if use_sparsemax else 1))

    def scales(self) -> torch.Tensor:
        return sparsemax(self.beta) * len(self.beta) if self.use_sparsemax else self.beta

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = [1] * weight.dim()
        shape[1] = -1
        return weight * self.scales().view(shape)

    def select(self, keep_in, keep_out) -> dict:
        if keep_in is not None:
            self.beta = nn.Parameter(self.beta.detach()[keep_in].clone())
            return {"beta": [keep_in]}
        return {}


def _one_hot_rows(n: int, patterns: int, rest: float = 0.01) -> torch.Tensor:
    """``n`` rows, each 1 at one pattern (a random balanced assignment) and ``rest`` * U(0, 1) elsewhere."""
    out = torch.rand(n, patterns) * rest
    out[torch.arange(n), torch.randperm(n) % patterns] = 1.0
    return out


class GroupedConnectivity(nn.Module):
    """Grouped-convolution search: ``weight[o, i] * (P @ S)[i, o]``."""

    INITS = ("random", "partition")

    def __init__(self, in_channels: int, out_channels: int, patterns: int, init: str = "random") -> None:
        super().__init__()
        if init not in self.INITS:
            raise ValueError(f"init must be one of {self.INITS}, got {init!r}")
        if init == "partition" and min(in_channels, out_channels) >= patterns:
            # each channel mostly in one pattern: a near-grouped conv that the search may reconnect
            P, S = _one_hot_rows(in_channels, patterns), _one_hot_rows(out_channels, patterns).t()
        else:  # patterns differ; E[(P @ S)[i, o]] = 1, i.e. the dense conv on average. (With fewer
            # channels than patterns a partition would leave whole patterns, and their outputs, unfed.)
            P, S = torch.rand(in_channels, patterns) * 2 / patterns, torch.rand(patterns, out_channels) * 2
        self.P, self.S = nn.Parameter(P), nn.Parameter(S)

    def connectivity(self) -> torch.Tensor:
        return self.P @ self.S  # (in, out)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        m = self.connectivity().t()
        return weight * m.view(*m.shape, *([1] * (weight.dim() - 2)))

    def select(self, keep_in, keep_out) -> dict:
        slices = {}
        if keep_in is not None:
            self.P = nn.Parameter(self.P.detach()[keep_in].clone())
            slices["P"] = [keep_in, None]
        if keep_out is not None:
            self.S = nn.Parameter(self.S.detach()[:, keep_out].clone())
            slices["S"] = [None, keep_out]
        return slices


def parametrized_layers(gm: nn.Module, kind: type) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """``(module path, layer, parametrization)`` for every ``kind`` on a layer's weight."""
    for name, m in gm.named_modules():
        if not parametrize.is_parametrized(m, "weight"):
            continue  # (a captured weight norm's tensors sit in plain containers of that name)
        for p in m.parametrizations.weight:
            if isinstance(p, kind):
                yield name, m, p


def kernel_masks(gm: nn.Module) -> Iterator[KernelMask]:
    """Every KernelMask in ``gm``."""
    return (p for _, _, p in parametrized_layers(gm, KernelMask))


def channel_selects(gm: nn.Module) -> Iterator[ChannelSelect]:
    """Every ChannelSelect in ``gm``."""
    return (p for _, _, p in parametrized_layers(gm, ChannelSelect))


def grouped_connectivities(gm: nn.Module) -> Iterator[GroupedConnectivity]:
    """Every GroupedConnectivity in ``gm``."""
    return (p for _, _, p in parametrized_layers(gm, GroupedConnectivity))
