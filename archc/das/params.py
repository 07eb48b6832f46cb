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
* ``PatternAssignment``: grouped convolutions, with ``P`` and ``S`` computed: every input and
  output channel holds a sparse distribution over the patterns (sparsemax of its logits).

Both grouped forms give ``factors() -> (P, S)``, the pair the compaction lowers.

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
    """Martins & Astudillo's sparsemax along the last dim: sparse probability vectors."""
    sorted_z, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cumsum = sorted_z.cumsum(-1)
    k_z = ((1 + k * sorted_z) > cumsum).sum(-1, keepdim=True)  # the support's size (a prefix of the sorted z)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z
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


class Connectivity(nn.Module):
    """A grouped-conv search: ``weight[o, i] * (P @ S)[i, o]`` for the ``factors()`` P, S."""

    INITS = ("random", "partition")

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``P`` (inputs x patterns) and ``S`` (patterns x outputs)."""
        raise NotImplementedError

    def connectivity(self) -> torch.Tensor:
        P, S = self.factors()
        return P @ S  # (in, out)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        m = self.connectivity().t()
        return weight * m.view(*m.shape, *([1] * (weight.dim() - 2)))

    def _slice(self, name: str, keep, dim: int) -> dict:
        """Keep the ``keep`` entries of parameter ``name`` along ``dim``; the slice, for the optimizer."""
        if keep is None:
            return {}
        index = [slice(None)] * 2
        index[dim] = keep
        setattr(self, name, nn.Parameter(getattr(self, name).detach()[tuple(index)].clone()))
        return {name: [keep, None] if dim == 0 else [None, keep]}


def _check_init(init: str) -> None:
    if init not in Connectivity.INITS:
        raise ValueError(f"init must be one of {Connectivity.INITS}, got {init!r}")


class GroupedConnectivity(Connectivity):
    """Grouped-convolution search (Shin et al.): ``P`` and ``S`` are free parameters."""

    def __init__(self, in_channels: int, out_channels: int, patterns: int, init: str = "random") -> None:
        super().__init__()
        _check_init(init)
        if init == "partition" and min(in_channels, out_channels) >= patterns:
            # each channel mostly in one pattern: a near-grouped conv that the search may reconnect
            P, S = _one_hot_rows(in_channels, patterns), _one_hot_rows(out_channels, patterns).t()
        else:  # patterns differ; E[(P @ S)[i, o]] = 1, i.e. the dense conv on average. (With fewer
            # channels than patterns a partition would leave whole patterns, and their outputs, unfed.)
            P, S = torch.rand(in_channels, patterns) * 2 / patterns, torch.rand(patterns, out_channels) * 2
        self.P, self.S = nn.Parameter(P), nn.Parameter(S)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.P, self.S

    def select(self, keep_in, keep_out) -> dict:
        return {**self._slice("P", keep_in, 0), **self._slice("S", keep_out, 1)}


class PatternAssignment(Connectivity):
    """Grouped-convolution search by assignment: row ``i`` of ``P`` is input channel ``i``'s
    sparse distribution over the patterns, column ``o`` of ``S`` output ``o``'s, each the
    sparsemax of a row of logits. ``S`` is scaled by the number of patterns ``p``, so uniform
    distributions give the dense conv (and a channel in one pattern scales its weights by
    ``p``, which the weights absorb). Once every channel sits in one pattern (exact zeros, no
    threshold) the conv is a sum of disjoint blocks: a grouped conv when they are equal. A
    channel in one pattern gets no gradient on its logits (sparsemax is flat at a vertex), so
    it stays there: the assignment settles as the search goes. The search pushes there with
    :func:`archc.das.regularizers.assignment_penalty`.
    """

    def __init__(self, in_channels: int, out_channels: int, patterns: int, init: str = "random") -> None:
        super().__init__()
        _check_init(init)
        self.patterns = patterns
        if init == "partition" and min(in_channels, out_channels) >= patterns:
            # a logit gap of 0.9 < 1: each channel mostly (not only) in one pattern, so it can still move
            inputs, outputs = 0.9 * _one_hot_rows(in_channels, patterns, 0), 0.9 * _one_hot_rows(out_channels, patterns, 0)
        else:  # nearly equal logits: nearly uniform distributions, the dense conv
            inputs, outputs = torch.randn(in_channels, patterns) * 0.01, torch.randn(out_channels, patterns) * 0.01
        self.input_logits, self.output_logits = nn.Parameter(inputs), nn.Parameter(outputs)

    def distributions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each input channel's (rows, in x p) and each output channel's (rows, out x p)
        distribution over the patterns."""
        P = sparsemax(self.input_logits)
        # an output only joins patterns that have inputs: one in an empty pattern would be its bias
        # alone, a constant channel, and a BatchNorm after it divides by a running variance of ~0
        # while Adam walks that bias about one lr per step on gradients of rounding noise
        fed = (P.detach() > 0).any(0)
        logits = self.output_logits.masked_fill(~fed, torch.finfo(self.output_logits.dtype).min / 2)
        return P, sparsemax(logits)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        P, outputs = self.distributions()
        return P, self.patterns * outputs.t()

    def select(self, keep_in, keep_out) -> dict:
        return {**self._slice("input_logits", keep_in, 0), **self._slice("output_logits", keep_out, 0)}


GROUPED_FORMS = {"lasso": GroupedConnectivity, "assign": PatternAssignment}


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


def pattern_assignments(gm: nn.Module) -> Iterator[PatternAssignment]:
    """Every PatternAssignment in ``gm``."""
    return (p for _, _, p in parametrized_layers(gm, PatternAssignment))
