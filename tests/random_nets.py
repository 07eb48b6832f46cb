"""Hypothesis strategy generating random, valid, fx-traceable conv networks.

``random_networks()`` draws ``(model, (x,))``: a DAG of blocks on a (2, C, H, W)
tensor ending in a Linear head. The model's forward interprets a fixed Python
``plan`` over an ``nn.ModuleList`` (no tensor-dependent control flow), so
``torch.fx.symbolic_trace`` unrolls it into a plain graph.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

MAX_C = 24
ACTS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Hardswish)
BLOCKS = ("conv", "grouped", "depthwise", "norm", "act", "residual", "se",
          "cat", "chunk", "pool", "dropout", "shared")


class ChannelsLastLN(nn.Module):
    """NCHW -> NHWC, LayerNorm over C, Linear C -> C_out, back to NCHW."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(cin), nn.Linear(cin, cout)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = self.fc(self.norm(x))
        return x.permute(0, 3, 1, 2)


class RandomNet(nn.Module):
    """Interprets ``plan``: a list of ``(op, input_indices, layer_index, arg)``.

    Values are numbered in creation order (0 is the input). Ops:
    ``layer`` applies ``layers[layer_index]``; ``add``/``mul``/``cat`` combine
    inputs; ``chunk``/``split`` append every piece; ``sigmoid_mul`` is
    ``a * torch.sigmoid(b)``. The last value feeds the head.
    """

    def __init__(self, layers, plan, head: str, fc: nn.Linear):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.plan = [tuple(p) for p in plan]
        self.head = head
        self.fc = fc

    def extra_repr(self) -> str:
        steps = "\n".join(f"  v{i + 1}: {p}" for i, p in enumerate(self.plan))
        return f"head={self.head!r}, plan=[\n{steps}\n]"

    def forward(self, x):
        vals = [x]
        for op, ins, li, arg in self.plan:
            a = [vals[i] for i in ins]
            if op == "layer":
                vals.append(self.layers[li](a[0]))
            elif op == "add":
                vals.append(a[0] + a[1])
            elif op == "mul":
                vals.append(a[0] * a[1])
            elif op == "sigmoid_mul":
                vals.append(a[0] * torch.sigmoid(a[1]))
            elif op == "cat":
                vals.append(torch.cat(a, dim=1))
            elif op == "chunk":  # arg = (chunks, number of pieces produced)
                pieces = torch.chunk(a[0], arg[0], dim=1)
                vals.extend(pieces[j] for j in range(arg[1]))
            elif op == "split":  # arg = split sizes
                pieces = torch.split(a[0], list(arg), dim=1)
                vals.extend(pieces[j] for j in range(len(arg)))
            else:
                raise ValueError(op)
        y = vals[-1]
        if self.head == "pool":
            y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        else:
            y = y.flatten(1)
        return self.fc(y)


class _Builder:
    """Records layers and plan steps while tracking each value's (C, H, W)."""

    def __init__(self, draw, shape):
        self.draw, self.layers, self.plan, self.shapes = draw, [], [], [shape]

    def randint(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    def layer(self, module, src, out_shape):
        self.layers.append(module)
        return self.op("layer", (src,), [out_shape], li=len(self.layers) - 1)

    def op(self, name, ins, out_shapes, li=-1, arg=None):
        self.plan.append((name, tuple(ins), li, arg))
        self.shapes.extend(out_shapes)
        return len(self.shapes) - 1

    def same_shape(self, src):
        return [i for i, s in enumerate(self.shapes[:-1]) if s == self.shapes[src] and i != src]

    # ------------------------------------------------------------------ blocks
    def conv(self, src, cout=None, k=None):
        c, h, w = self.shapes[src]
        cout = cout or self.randint(2, MAX_C)
        k = k or self.pick([1, 3])
        stride = 2 if k == 3 and min(h, w) >= 8 and self.draw(st.booleans()) else 1
        oh, ow = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
        m = nn.Conv2d(c, cout, k, stride, k // 2, bias=self.draw(st.booleans()))
        return self.layer(m, src, (cout, oh, ow))

    def grouped(self, src):
        c, h, w = self.shapes[src]
        gs = [g for g in range(2, c) if c % g == 0]
        if not gs:
            return self.conv(src)
        g = self.pick(gs)
        cout = g * self.randint(1, MAX_C // g)
        return self.layer(nn.Conv2d(c, cout, 3, 1, 1, groups=g), src, (cout, h, w))

    def depthwise(self, src):
        c, h, w = self.shapes[src]
        mult = self.pick([m for m in (1, 2, 3) if c * m <= MAX_C] or [1])
        return self.layer(nn.Conv2d(c, c * mult, 3, 1, 1, groups=c, bias=False), src, (c * mult, h, w))

    def norm(self, src):
        c, h, w = self.shapes[src]
        kind = self.pick(["bn", "gn", "ln"])
        if kind == "bn":
            return self.layer(nn.BatchNorm2d(c), src, (c, h, w))
        if kind == "gn":
            g = self.pick([g for g in range(1, c + 1) if c % g == 0])
            return self.layer(nn.GroupNorm(g, c), src, (c, h, w))
        cout = self.pick([c, self.randint(2, MAX_C)])
        return self.layer(ChannelsLastLN(c, cout), src, (cout, h, w))

    def act(self, src):
        return self.layer(self.pick(ACTS)(), src, self.shapes[src])

    def residual(self, src):
        """Add an earlier same-shape tensor, else wrap a new conv branch around src."""
        others = self.same_shape(src)
        if others and self.draw(st.booleans()):
            return self.op("add", (src, self.pick(others)), [self.shapes[src]])
        c = self.shapes[src][0]
        k = self.pick([1, 3])
        body = self.layer(nn.Conv2d(c, c, k, 1, k // 2), src, self.shapes[src])
        body = self.act(body) if self.draw(st.booleans()) else body
        return self.op("add", (src, body) if self.draw(st.booleans()) else (body, src), [self.shapes[src]])

    def se(self, src):
        c, h, w = self.shapes[src]
        r = max(1, c // self.pick([2, 4]))
        functional = self.draw(st.booleans())  # `x * torch.sigmoid(s)` vs nn.Sigmoid gate
        gate = [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, r, 1), nn.ReLU(), nn.Conv2d(r, c, 1)]
        if not functional:
            gate.append(self.pick([nn.Sigmoid, nn.Hardsigmoid])())
        g = self.layer(nn.Sequential(*gate), src, (c, 1, 1))
        return self.op("sigmoid_mul" if functional else "mul", (src, g), [(c, h, w)])

    def cat(self, src):
        c, h, w = self.shapes[src]
        others = [i for i, s in enumerate(self.shapes) if s[1:] == (h, w) and c + s[0] <= MAX_C]
        if not others:
            return self.conv(src)
        o = self.pick(others)
        ins = (src, o) if self.draw(st.booleans()) else (o, src)
        return self.op("cat", ins, [(c + self.shapes[o][0], h, w)])

    def chunk(self, src):
        c, h, w = self.shapes[src]
        if c < 2:
            return self.conv(src)
        if self.draw(st.booleans()):
            n = self.pick([n for n in (2, 3, 4) if n <= c])
            step = -(-c // n)  # torch.chunk: ceil-sized pieces, possibly fewer than n
            sizes = [min(step, c - i) for i in range(0, c, step)]
            first = self.op("chunk", (src,), [(s, h, w) for s in sizes], arg=(n, len(sizes)))
        else:
            a = self.randint(1, c - 1)
            sizes = [a, c - a]
            first = self.op("split", (src,), [(s, h, w) for s in sizes], arg=tuple(sizes))
        pieces = list(range(first - len(sizes) + 1, first + 1))
        k = self.pick(range(len(pieces)))
        piece = pieces[k]
        if self.draw(st.booleans()):
            pieces[k] = self.act(piece)
        else:
            cout = self.randint(2, 8)
            pieces[k] = self.layer(nn.Conv2d(sizes[k], cout, 3, 1, 1), piece, (cout, h, w))
        if sum(self.shapes[p][0] for p in pieces) <= MAX_C and self.draw(st.integers(0, 3)) > 0:
            if self.draw(st.booleans()):
                pieces = pieces[::-1]
            return self.op("cat", pieces, [(sum(self.shapes[p][0] for p in pieces), h, w)])
        return pieces[k]  # other pieces are dropped (a channel slice)

    def pool(self, src):
        c, h, w = self.shapes[src]
        cls = self.pick([nn.AvgPool2d, nn.MaxPool2d])
        if min(h, w) >= 4 and self.draw(st.booleans()):
            return self.layer(cls(2), src, (c, h // 2, w // 2))
        return self.layer(cls(3, 1, 1), src, (c, h, w))

    def shared(self, src):
        """One conv called twice, on ``src`` and on another tensor of its shape, summed."""
        c, h, w = self.shapes[src]
        others = self.same_shape(src)
        other = self.pick(others) if others and self.draw(st.booleans()) else self.act(src)
        cout, k = self.randint(2, MAX_C), self.pick([1, 3])
        first = self.layer(nn.Conv2d(c, cout, k, 1, k // 2, bias=self.draw(st.booleans())), src, (cout, h, w))
        second = self.op("layer", (other,), [(cout, h, w)], li=len(self.layers) - 1)
        return self.op("add", (first, second), [(cout, h, w)])

    def dropout(self, src):
        return self.layer(nn.Dropout(self.pick([0.0, 0.1, 0.5])), src, self.shapes[src])


def _randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial affine params and running stats so norms do not map 0 to 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)


@st.composite
def random_networks(draw) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Draw a random eval-mode ``RandomNet`` and its input ``(x,)`` of batch 2."""
    seed = draw(st.integers(0, 2**31 - 1))
    cin, h, w = draw(st.integers(3, 8)), draw(st.integers(8, 16)), draw(st.integers(8, 16))
    n_classes = draw(st.integers(2, 10))
    torch.manual_seed(seed)
    b = _Builder(draw, (cin, h, w))
    cur = b.conv(0, k=draw(st.sampled_from([1, 3])))  # stem
    for _ in range(draw(st.integers(1, 9))):
        cur = getattr(b, draw(st.sampled_from(BLOCKS)))(cur)
    if cur != len(b.shapes) - 1:  # head reads the last value: ensure it is `cur`
        cur = b.act(cur)
    c, oh, ow = b.shapes[cur]
    head = draw(st.sampled_from(["pool", "flatten"]))
    fc = nn.Linear(c if head == "pool" else c * oh * ow, n_classes)
    model = RandomNet(b.layers, b.plan, head, fc)
    model.n_classes = n_classes
    gen = torch.Generator().manual_seed(seed)
    _randomize_norms(model, gen)
    x = torch.randn(2, cin, h, w, generator=gen)
    return model.eval(), (x,)
