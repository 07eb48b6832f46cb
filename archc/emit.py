"""Emit a compact GraphModule as plain PyTorch: a ``model.py`` plus ``weights.safetensors``.

The written ``model.py`` needs only torch and safetensors (not archc): its ``__init__``
rebuilds the module tree from ``torch.nn`` constructors (each checked to round-trip) and
registers the graph's own tensors; its ``forward`` is the fx graph's generated code.

Example::

    small = archc.compact(gated)
    path = write_model_dir(small, "out/", (x,))   # checked against ``small`` on ``x``
    # elsewhere, without archc:  from model import load; y = load("cpu")(x)
"""
from __future__ import annotations

import builtins
import importlib.util
import io
import keyword
import math
import os
import sys
import tokenize
import types
import uuid
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import torch.fx
from torch import nn
from torch.utils import _pytree as pytree

from archc.checkpoint import atomic_write_bytes
from archc.emit_modules import leaf_constructor, same_value
from archc.emit_template import HELPERS, TEMPLATE
from archc.errors import ArchcError, CompactionError, node_error

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SPECIAL = {"inf": "from math import inf", "nan": "from math import nan",
            "NoneType": "NoneType = type(None)", "device": "from torch import device"}
_IMPORTABLE = ({"torch"} | set(sys.stdlib_module_names)) - {"__main__"}
_RESERVED = {"Path", "torch", "nn", "load_file", "WEIGHTS", "_ALIASES", "_install", "_param", "_buffer", "load"}
def _constructor(path: str, mod: nn.Module, called: bool) -> str:
    """``nn.X(...)`` for torch.nn leaves and anything the graph calls; ``nn.Module()`` for holders."""
    if type(mod) in _CONTAINERS:
        return f"nn.{type(mod).__name__}()"
    if called or (next(mod.children(), None) is None and type(mod) is not nn.Module):
        try:
            return leaf_constructor(mod)
        except ArchcError as e:
            if called:
                raise ArchcError(f"module {path!r} ({type(mod).__name__}) cannot be emitted as plain PyTorch: "
                                 f"{e}. Use a torch.nn module there, or keep it out of the graph.") from None
    return "nn.Module()"  # never called: the graph only uses its children and tensors


def _tree(gm: torch.fx.GraphModule) -> tuple[list[str], dict[str, torch.Tensor]]:
    """``__init__`` lines installing every submodule and tensor, plus tensors not in gm.state_dict()."""
    called = {n.target for n in gm.graph.find_nodes(op="call_module")}
    lines, seen, aliased, holders = [], {}, [], [("", gm)]
    for path, mod in gm.named_modules(remove_duplicate=False):
        if not path or any(path.startswith(a + ".") for a in aliased):
            continue
        if id(mod) in seen:  # a shared module: install the same instance again
            lines.append(f"_install(self, {path!r}, self.get_submodule({seen[id(mod)]!r}))")
            aliased.append(path)
            continue
        seen[id(mod)] = path
        ctor = _constructor(path, mod, path in called)
        lines.append(f"_install(self, {path!r}, {ctor})")
        if ctor == "nn.Module()" or type(mod) in _CONTAINERS:  # holders: register their own tensors
            holders.append((path, mod))
    tensors = {(f"{path}." if path else "") + name: (kind, t) for path, mod in holders
               for kind, table in (("param", mod._parameters), ("buffer", mod._buffers))
               for name, t in table.items() if t is not None}
    for node in gm.graph.find_nodes(op="get_attr"):  # plain tensor attributes become buffers
        parent, _, name = node.target.rpartition(".")
        owner = gm.get_submodule(parent)
        value = getattr(owner, name)
        if node.target in tensors or isinstance(value, nn.Module) or name in {*owner._parameters, *owner._buffers}:
            continue
        if not isinstance(value, torch.Tensor):
            raise node_error(ArchcError, node, f"get_attr reads a {type(value).__name__}, which cannot be "
                             "emitted as plain PyTorch", "store it as a tensor buffer")
        tensors[node.target] = ("buffer", value)
    for path, (kind, t) in tensors.items():
        dtype = "" if t.dtype == torch.float32 else f", dtype={t.dtype}"
        lines.append(f"_{kind}(self, {path!r}, {tuple(t.shape)}{dtype})")
    return lines, {path: t.detach() for path, (kind, t) in tensors.items()}


def _global_line(name: str, value: Any) -> str | None:
    """The line defining global ``name`` in the generated file ("" for builtins), None if impossible."""
    if name in _SPECIAL or getattr(builtins, name, object()) is value:
        return _SPECIAL.get(name, "")
    if isinstance(value, types.ModuleType):
        ok = value.__name__.split(".")[0] in _IMPORTABLE
        return None if not ok else f"import {value.__name__}" + ("" if name == value.__name__ else f" as {name}")
    mod, qual = getattr(value, "__module__", None) or "", getattr(value, "__qualname__", "")
    if mod.split(".")[0] not in _IMPORTABLE or not qual or "<" in qual:
        return None
    try:
        found = importlib.import_module(mod)
        for part in qual.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    if found is not value:
        return None
    return f"from {mod} import {qual} as {name}" if "." not in qual else f"import {mod}\n{name} = {mod}.{qual}"


def _names(src: str) -> set[str]:
    return {t.string for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.NAME}


def _imports(gm: torch.fx.GraphModule, code: Any, body: str) -> list[str]:
    """Lines defining every global ``body`` uses; ArchcError naming the first node using an impossible one."""
    used, lines = _names(body), []
    for name, value in sorted({**code.globals, "inf": math.inf, "nan": math.nan}.items()):
        if name not in used or name in ("torch", "nn"):
            continue
        line = None if name in _RESERVED else _global_line(name, value)
        if line is None:
            problem = (f"the graph uses {value!r} (global {name!r}), which is not importable from torch "
                       "or the standard library")
            nodes = {n.name: n for n in gm.graph.nodes}
            users = [ln.strip().split(" = ")[0] for ln in code.src.splitlines() if name in _names(ln)]
            if users and users[0] in nodes:
                raise node_error(ArchcError, nodes[users[0]], problem + ", so it cannot be emitted as plain PyTorch",
                                 "use a torch function there")
            raise ArchcError(problem)
        lines += [line] if line else []
    return lines


def _weights(gm: torch.fx.GraphModule, extra: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """CPU, contiguous, unshared tensors for safetensors, plus ``alias -> stored key`` for tied ones.

    safetensors refuses tensors that share memory: exact aliases are stored once (load() restores
    them from ``_ALIASES``); overlapping views are copied.
    """
    tensors, aliases, owners, storages = {}, {}, {}, set()
    for key, t in {**gm.state_dict(), **extra}.items():
        t = t.detach()
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in owners:
            aliases[key] = owners[view]
            continue
        owners[view] = key
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        tensors[key] = t.cpu().contiguous() if whole and view[0] not in storages else t.cpu().clone().contiguous()
        storages.add(view[0] if t.numel() else None)
    return tensors, aliases


def _render(gm: torch.fx.GraphModule, class_name: str, model_name: str | None) -> tuple[str, dict]:
    """The source of model.py and the tensors of weights.safetensors."""
    if not class_name.isidentifier() or keyword.iskeyword(class_name) or class_name in _RESERVED:
        raise ArchcError(f"class_name {class_name!r} is not a free Python identifier")
    if type(gm.graph._codegen) is not torch.fx.graph.CodeGen:
        raise ArchcError(f"the graph uses {type(gm.graph._codegen).__name__}; only plain fx code can be emitted")
    lines, extra = _tree(gm)
    tensors, aliases = _weights(gm, extra)
    frozen = tuple(k for k, p in gm.named_parameters(remove_duplicate=False)
                   if not p.requires_grad and (p.dtype.is_floating_point or p.dtype.is_complex))
    if frozen:
        lines += [f"for name in {frozen!r}:  # frozen in the source model",
                  "    self.get_parameter(name).requires_grad_(False)"]
    code = gm.graph.python_code(root_module="self")
    forward = "\n    ".join(ln.rstrip() for ln in code.src.strip().splitlines() if ln.strip())
    init = "".join(f"\n        {ln}" for ln in lines)
    imports = "".join(ln + "\n" for ln in _imports(gm, code, forward + init))
    helpers = "\n\n\n".join(h for name, h in HELPERS.items() if name + "(" in init)
    alias_text = "{" + "".join(f"\n    {k!r}: {v!r}," for k, v in aliases.items()) + ("\n}" if aliases else "}")
    return TEMPLATE.substitute(
        name=" ".join(str(model_name or getattr(gm, "meta", {}).get("archc.model_name") or type(gm).__name__).split()),
        class_name=class_name,
        n_params=f"{sum(p.numel() for p in gm.parameters()):,}", imports=imports, aliases=alias_text,
        helpers=helpers, init=init, forward=forward), tensors


def python_source(gm: torch.fx.GraphModule, class_name: str = "CompactModel", *, model_name: str | None = None) -> str:
    """Source of a standalone module (torch + safetensors only) defining ``class_name`` and ``load()``.

    Example: ``Path("out/model.py").write_text(python_source(archc.compact(gated)))``
    (``load()`` then expects ``out/weights.safetensors``: use :func:`write_model_dir`).
    Raises ArchcError naming the module or node that cannot be written as plain PyTorch.
    """
    return _render(gm, class_name, model_name)[0]


def _import_file(path: Path) -> types.ModuleType:
    """Execute ``path`` as a fresh module under a unique name (no bytecode cache written)."""
    spec = importlib.util.spec_from_file_location(f"_archc_emitted_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)  # noqa: S102
    return module


def _max_error(want: Any, got: Any) -> float:
    """Largest abs difference over all outputs, each relative to max(1, max|want|); inf on structure change."""
    (want_leaves, want_spec), (got_leaves, got_spec) = pytree.tree_flatten(want), pytree.tree_flatten(got)
    if str(want_spec) != str(got_spec):
        return math.inf
    worst = 0.0
    for a, b in zip(want_leaves, got_leaves):
        if not isinstance(a, torch.Tensor):
            worst = max(worst, 0.0 if same_value(a, b) else math.inf)
        elif not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return math.inf
        elif a.numel():
            scale = max(1.0, a.abs().max().item())
            worst = max(worst, (a.double() - b.double()).abs().max().item() / scale)
    return worst


def write_model_dir(gm: torch.fx.GraphModule, out_dir: Union[str, os.PathLike], example_inputs: Sequence[Any],
                    *, class_name: str = "CompactModel", model_name: str | None = None) -> Path:
    """Write ``model.py`` + ``weights.safetensors`` into ``out_dir``; check they reproduce ``gm``.

    Example: ``write_model_dir(archc.compact(gated), "out", (x,))`` -> ``Path("out/model.py")``.
    Raises CompactionError, removing both files, when the written model fails or its outputs
    differ from ``gm``'s (eval mode) by more than 1e-5 * max(1, |output|).
    """
    from safetensors.torch import save as safetensors_bytes

    source, tensors = _render(gm, class_name, model_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_py, weights = out / "model.py", out / "weights.safetensors"
    device = next(iter([*gm.parameters(), *gm.buffers()]), torch.empty(0)).device
    modes = {m: m.training for m in gm.modules()}
    def fresh():  # in-place ops must not change the inputs between the two runs
        return pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, tuple(example_inputs))

    try:
        with torch.no_grad():
            want = gm.eval()(*fresh())
    finally:
        for m, mode in modes.items():
            m.training = mode
    try:
        atomic_write_bytes(weights, lambda f: f.write(safetensors_bytes(tensors, metadata={"format": "pt"})))
        atomic_write_bytes(model_py, lambda f: f.write(source.encode()))
        with torch.no_grad():
            err = _max_error(want, _import_file(model_py).load(device)(*fresh()))
        if not err <= 1e-5:
            raise CompactionError(f"the emitted {model_py} differs from the compact graph (max error {err:.3g} "
                                  "relative to max(1, |output|)); nothing was kept. Please report this model.")
    except Exception as e:
        model_py.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        if isinstance(e, CompactionError):
            raise
        raise CompactionError(f"the emitted {model_py} failed to load or run ({type(e).__name__}: {e}); "
                              "nothing was kept. Please report this model.") from e
    return model_py
