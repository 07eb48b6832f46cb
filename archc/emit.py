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
import importlib
import importlib.util
import inspect
import io
import math
import os
import re
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

from archc.errors import ArchcError, CompactionError, node_error

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SPECIAL = {"inf": "from math import inf", "nan": "from math import nan",
            "NoneType": "NoneType = type(None)", "device": "from torch import device"}
_IMPORTABLE = ({"torch"} | set(sys.stdlib_module_names)) - {"__main__"}
_INIT_ONLY = {"init"}  # attributes that only seed random initialisation (PReLU)
_HELPERS = {
    "_install": '''def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    """Add ``module`` at the dotted ``path`` (its parent exists already)."""
    parent, _, name = path.rpartition(".")
    root.get_submodule(parent).add_module(name, module)''',
    "_param": '''def _param(root: nn.Module, path: str, shape, dtype=torch.float32) -> None:
    """Register an uninitialised parameter at ``path``; load() fills it."""
    parent, _, name = path.rpartition(".")
    grad = dtype.is_floating_point or dtype.is_complex
    param = nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=grad)
    root.get_submodule(parent).register_parameter(name, param)''',
    "_buffer": '''def _buffer(root: nn.Module, path: str, shape, dtype=torch.float32) -> None:
    """Register an uninitialised buffer at ``path``; load() fills it."""
    parent, _, name = path.rpartition(".")
    root.get_submodule(parent).register_buffer(name, torch.empty(shape, dtype=dtype))''',
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        both = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        return both and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared count as different
        return False


def _mismatch(orig: nn.Module, built: nn.Module) -> str | None:
    """Why ``built`` is not a structural copy of ``orig`` (tensor names, shapes, attributes), or None."""
    if type(built) is not type(orig):
        return f"it builds a {type(built).__name__}"
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (orig, built)]
    if shapes[0] != shapes[1] or orig._parameters.keys() != built._parameters.keys():
        return f"tensors differ: {shapes[0]} vs {shapes[1]}"
    if orig._buffers.keys() != built._buffers.keys():
        return "buffer names differ"
    for name in orig._non_persistent_buffers_set:
        if not _same(orig._buffers[name], built._buffers.get(name)):
            return f"non-persistent buffer {name!r} differs"
    a, b = ({k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"} for m in (orig, built))
    for key in sorted((a.keys() | b.keys()) - _INIT_ONLY):
        if not _same(a.get(key), b.get(key)):
            return f"attribute {key}={a.get(key)!r} but the call gives {b.get(key)!r}"
    return None


def _build(text: str) -> nn.Module:
    try:
        return eval("nn." + text, {"nn": nn, "torch": torch, "inf": math.inf, "nan": math.nan})  # noqa: S307
    except Exception as e:  # noqa: BLE001
        raise ArchcError(f"its repr {text!r} is not a constructor call ({type(e).__name__}: {e})") from None


def leaf_constructor(module: nn.Module) -> str:
    """The ``nn.<Class>(...)`` call that rebuilds ``module``, verified to round-trip.

    Starts from the repr; constructor arguments it leaves out (``Hardswish(inplace=True)``
    prints as ``Hardswish()``) are added from the module's attributes.
    Example: ``leaf_constructor(nn.Linear(4, 16))`` -> ``"nn.Linear(in_features=4, out_features=16, bias=True)"``.
    Raises ArchcError when ``module`` is not a torch.nn class or cannot be rebuilt exactly.
    """
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls:
        raise ArchcError(f"{cls.__module__}.{cls.__qualname__} is not a torch.nn class")
    bare = r"(\w+)=(?!True\b|False\b|None\b|inf\b|nan\b)([A-Za-z_]\w*)(?=[,)])"  # padding=same -> 'same'
    text = re.sub(bare, r"\1='\2'", repr(module))
    built = _build(text)
    if _mismatch(module, built) and "\n" not in text:
        given, params = set(re.findall(r"(\w+)=", text)), inspect.signature(cls.__init__).parameters
        extra = [f"{k}={v!r}" for k, v in vars(module).items()
                 if k in params and k not in given and not _same(v, getattr(built, k, None))]
        if extra:
            text = text[:-1] + ("" if text.endswith("()") else ", ") + ", ".join(extra) + ")"
            built = _build(text)
    problem = _mismatch(module, built)
    if problem:
        raise ArchcError(f"{text!r} does not rebuild it: {problem}")
    return "nn." + text


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
        if node.target in tensors or isinstance(value, nn.Module) or name in owner._parameters or name in owner._buffers:
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
        line = _global_line(name, value)
        if line is None:
            problem = f"the graph uses {value!r} (global {name!r}), which is not importable from torch or the standard library"
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
    tensors, aliases, owners = {}, {}, {}
    for key, t in {**gm.state_dict(), **extra}.items():
        t = t.detach()
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in owners:
            aliases[key] = owners[view]
            continue
        owners[view] = key
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        tensors[key] = t.cpu().contiguous() if whole else t.cpu().clone().contiguous()
    return tensors, aliases


def _render(gm: torch.fx.GraphModule, class_name: str, model_name: str | None) -> tuple[str, dict]:
    """The source of model.py and the tensors of weights.safetensors."""
    if not class_name.isidentifier():
        raise ArchcError(f"class_name {class_name!r} is not a Python identifier")
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
    forward = "\n".join(ln.rstrip() for ln in code.src.strip().splitlines()).replace("\n", "\n    ")
    init = "".join(f"\n        {ln}" for ln in lines)
    imports = "".join(ln + "\n" for ln in _imports(gm, code, forward + init))
    helpers = "\n\n\n".join(h for name, h in _HELPERS.items() if name + "(" in init)
    alias_text = "{" + "".join(f"\n    {k!r}: {v!r}," for k, v in aliases.items()) + ("\n}" if aliases else "}")
    name = model_name or gm.meta.get("archc.model_name") or type(gm).__name__
    n_params = sum(p.numel() for p in gm.parameters())
    return f'''# Generated by archc from {name} ({n_params:,} parameters): the compact model as plain torch.nn.
# Standalone: needs only torch and safetensors (archc is NOT required).
# The weights are in weights.safetensors next to this file.  Usage:
#     from model import load
#     model = load("cpu")  # a {class_name} in eval mode
#     y = model(x)
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import load_file
{imports}
WEIGHTS = Path(__file__).with_name("weights.safetensors")
# state-dict keys stored once in the weights file but used under several names
_ALIASES: dict[str, str] = {alias_text}


{helpers}


class {class_name}(nn.Module):
    """The compact model; build it with load() to get the trained weights."""

    def __init__(self) -> None:
        super().__init__(){init}

    {forward}


def load(device="cpu") -> {class_name}:
    """Build {class_name}, load weights.safetensors into it (strict) and return it in eval mode."""
    state = load_file(str(WEIGHTS), device=str(device))
    for alias, key in _ALIASES.items():
        state[alias] = state[key]
    model = {class_name}()
    model.load_state_dict(state, strict=True, assign=True)  # assign keeps the stored dtypes
    return model.to(device).eval()
''', tensors


def python_source(gm: torch.fx.GraphModule, class_name: str = "CompactModel", *, model_name: str | None = None) -> str:
    """Source of a standalone module (torch + safetensors only) defining ``class_name`` and ``load()``.

    Example: ``Path("out/model.py").write_text(python_source(archc.compact(gated)))``
    (``load()`` then expects ``out/weights.safetensors``: use :func:`write_model_dir`).
    Raises ArchcError naming the module or node that cannot be written as plain PyTorch.
    """
    return _render(gm, class_name, model_name)[0]


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
            worst = max(worst, 0.0 if _same(a, b) else math.inf)
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
    from safetensors.torch import save_file

    source, tensors = _render(gm, class_name, model_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_py, weights = out / "model.py", out / "weights.safetensors"
    device = next(iter([*gm.parameters(), *gm.buffers()]), torch.empty(0)).device
    modes = {m: m.training for m in gm.modules()}
    try:
        with torch.no_grad():
            want = gm.eval()(*example_inputs)
    finally:
        for m, mode in modes.items():
            m.training = mode
    try:
        _atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        _atomic(model_py, lambda tmp: tmp.write_text(source))
        with torch.no_grad():
            err = _max_error(want, _import_file(model_py).load(device)(*example_inputs))
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
