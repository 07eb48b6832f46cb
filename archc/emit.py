"""Emit a compact GraphModule as plain PyTorch: a ``model.py`` plus ``weights.safetensors``.

The written ``model.py`` needs only torch and safetensors (not archc): it rebuilds the
module tree from ``torch.nn`` constructors, registers the graph's own parameters and
buffers, and its ``forward`` is the fx graph's generated code.

Example::

    small = archc.compact(gated)
    path = write_model_dir(small, "out/", (x,))   # checked against ``small`` on ``x``
    # elsewhere, without archc:  from model import load; y = load("cpu")(x)
"""
from __future__ import annotations

import builtins
import importlib.util
import io
import math
import os
import re
import sys
import tokenize
import types
import uuid
from dataclasses import dataclass, field
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
_IMPORTABLE = {"torch", *sys.stdlib_module_names} - {"__main__"}
_INIT_ONLY = {"init"}  # attributes that only affect random initialisation (PReLU)
_HELPERS = '''
def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    """Add ``module`` at the dotted ``path`` (its parent must exist already)."""
    parent, _, name = path.rpartition(".")
    root.get_submodule(parent).add_module(name, module)


def _param(root: nn.Module, path: str, shape, dtype=torch.float32) -> None:
    """Register an (uninitialised) parameter at ``path``; load() fills it."""
    parent, _, name = path.rpartition(".")
    grad = dtype.is_floating_point or dtype.is_complex
    tensor = nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=grad)
    root.get_submodule(parent).register_parameter(name, tensor)


def _buffer(root: nn.Module, path: str, shape, dtype=torch.float32) -> None:
    """Register an (uninitialised) buffer at ``path``; load() fills it."""
    parent, _, name = path.rpartition(".")
    root.get_submodule(parent).register_buffer(name, torch.empty(shape, dtype=dtype))
'''


@dataclass
class _Plan:
    """Everything needed to write a model: __init__ lines, weights and key aliases."""

    init: list[str] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - uncomparable values count as different
        return False


def _mismatch(orig: nn.Module, built: nn.Module) -> str | None:
    """Why ``built`` (from the repr) is not an exact structural copy of ``orig``, or None."""
    if type(built) is not type(orig):
        return f"repr builds a {type(built).__name__}"
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    if shapes(orig) != shapes(built):
        return f"state dict differs: {shapes(orig)} vs {shapes(built)}"
    if set(orig._parameters) != set(built._parameters) or set(orig._buffers) != set(built._buffers):
        return "parameter/buffer names differ"
    for name in orig._non_persistent_buffers_set:
        if not _same(orig._buffers[name], built._buffers.get(name)):
            return f"non-persistent buffer {name!r} differs"
    public = lambda m: {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}  # noqa: E731
    a, b = public(orig), public(built)
    for key in sorted((set(a) | set(b)) - _INIT_ONLY):
        if not _same(a.get(key), b.get(key)):
            return f"attribute {key}={a.get(key)!r} but the repr gives {b.get(key)!r}"
    return None


def leaf_constructor(module: nn.Module) -> str:
    """The ``nn.<Class>(...)`` call that rebuilds ``module``, verified to round-trip.

    Example: ``leaf_constructor(nn.Linear(4, 16))`` -> ``"nn.Linear(in_features=4, out_features=16, bias=True)"``.
    Raises ArchcError when ``module`` is not a torch.nn class or its repr loses information.
    """
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls:
        raise ArchcError(f"{cls.__module__}.{cls.__qualname__} is not a torch.nn class")
    text = re.sub(r"(\w+)=(?!True\b|False\b|None\b|inf\b|nan\b)([A-Za-z_]\w*)(?=[,)])", r"\1='\2'", repr(module))
    try:
        built = eval("nn." + text, {"nn": nn, "torch": torch, "inf": math.inf, "nan": math.nan})  # noqa: S307
    except Exception as e:  # noqa: BLE001
        raise ArchcError(f"its repr {repr(module)!r} is not a constructor call ({type(e).__name__}: {e})") from None
    problem = _mismatch(module, built)
    if problem:
        raise ArchcError(f"its repr {text!r} does not round-trip: {problem}")
    return "nn." + text


def _emit_tensor(plan: _Plan, path: str, tensor: torch.Tensor, kind: str) -> None:
    dtype = "" if tensor.dtype == torch.float32 else f", dtype={tensor.dtype}"
    plan.init.append(f"_{kind}(self, {path!r}, {tuple(tensor.shape)}{dtype})")
    plan.tensors[path] = tensor.detach()


def _constructor(path: str, mod: nn.Module, called: bool) -> str:
    """``nn.X(...)`` for torch.nn leaves (and anything called), ``nn.Module()`` for holders."""
    if type(mod) in _CONTAINERS:
        return f"nn.{type(mod).__name__}()"
    if called or (next(mod.children(), None) is None and type(mod) is not nn.Module):
        try:
            return leaf_constructor(mod)
        except ArchcError as e:
            if called:
                raise ArchcError(f"module {path!r} ({type(mod).__name__}) cannot be emitted as plain PyTorch: "
                                 f"{e}. Replace it with a torch.nn module or leave it out of the graph.") from None
    return "nn.Module()"  # a plain holder: the graph only uses its children and tensors


def _module_lines(gm: torch.fx.GraphModule, plan: _Plan) -> None:
    """Install every submodule; holders (plain containers, the root) get their own tensors registered."""
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    seen: dict[int, str] = {}
    aliased: list[str] = []
    holders: list[tuple[str, nn.Module]] = [("", gm)]
    for path, mod in gm.named_modules(remove_duplicate=False):
        if not path or any(path.startswith(a + ".") for a in aliased):
            continue
        if id(mod) in seen:  # a shared module: install the same instance again
            plan.init.append(f"_install(self, {path!r}, self.get_submodule({seen[id(mod)]!r}))")
            aliased.append(path)
            continue
        seen[id(mod)] = path
        ctor = _constructor(path, mod, path in called)
        plan.init.append(f"_install(self, {path!r}, {ctor})")
        if ctor == "nn.Module()" or type(mod) in _CONTAINERS:
            holders.append((path, mod))
    for path, mod in holders:
        prefix = f"{path}." if path else ""
        for kind, table in (("param", mod._parameters), ("buffer", mod._buffers)):
            for name, tensor in table.items():
                if tensor is not None:
                    _emit_tensor(plan, prefix + name, tensor, kind)


def _get_attr_lines(gm: torch.fx.GraphModule, plan: _Plan) -> None:
    """Tensors the graph reads with get_attr that are not registered anywhere become buffers."""
    for node in gm.graph.find_nodes(op="get_attr"):
        if node.target in plan.tensors:
            continue
        parent, _, name = node.target.rpartition(".")
        owner = gm.get_submodule(parent)
        value = getattr(owner, name)
        if isinstance(value, nn.Module) or name in owner._parameters or name in owner._buffers:
            continue
        if not isinstance(value, torch.Tensor):
            raise node_error(ArchcError, node, f"get_attr reads a {type(value).__name__}, not a tensor: "
                             "it cannot be emitted as plain PyTorch", "make it a tensor buffer")
        _emit_tensor(plan, node.target, value, "buffer")


def _python_names(src: str) -> set[str]:
    return {t.string for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.NAME}


def _global_line(name: str, value: Any) -> str | None:
    """The import that defines global ``name`` in the generated file ("" = builtin); None if impossible."""
    if name in _SPECIAL:
        return _SPECIAL[name]
    if getattr(builtins, name, object()) is value:
        return ""
    if isinstance(value, types.ModuleType):
        if value.__name__.split(".")[0] not in _IMPORTABLE:
            return None
        return f"import {name}" if name == value.__name__ else f"import {value.__name__} as {name}"
    mod, qual = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if not mod or mod.split(".")[0] not in _IMPORTABLE or "<" in qual:
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


def _imports(gm: torch.fx.GraphModule, code: Any, body: str) -> list[str]:
    """Import lines for every global the forward code uses; ArchcError naming the node otherwise."""
    used = _python_names(body)
    lines = [ln for name, ln in _SPECIAL.items() if name in used]
    for name, value in sorted(code.globals.items()):
        if name not in used or name in _SPECIAL or name in ("torch", "nn"):
            continue
        line = _global_line(name, value)
        if line is None:
            nodes = {n.name: n for n in gm.graph.nodes}
            where = [ln.strip().split(" = ")[0] for ln in code.src.splitlines() if name in _python_names(ln)]
            problem = f"the graph uses {value!r} (global {name!r}), which is not importable from torch or the standard library"
            if where and where[0] in nodes:
                raise node_error(ArchcError, nodes[where[0]], problem, "use a torch function instead")
            raise ArchcError(problem)
        lines.extend([line] if line else [])
    return [ln for ln in lines if ln.replace(" as torch", "") != "import torch"]


def _weights(gm: torch.fx.GraphModule, extra: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """CPU, contiguous, unshared tensors for safetensors plus ``alias -> stored key`` for tied ones."""
    tensors, aliases, owners = {}, {}, {}
    for key, t in {**gm.state_dict(), **extra}.items():
        t = t.detach()
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in owners:
            aliases[key] = owners[view]
            continue
        owners[view] = key
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        shared = any(v[0] == view[0] and v != view for v in owners) and t.numel()
        tensors[key] = t.cpu().contiguous() if whole and not shared else t.cpu().clone().contiguous()
    return tensors, aliases


def _plan(gm: torch.fx.GraphModule) -> tuple[_Plan, Any]:
    if type(gm.graph._codegen) is not torch.fx.graph.CodeGen:
        raise ArchcError(f"graph uses {type(gm.graph._codegen).__name__}; only plain fx code can be emitted")
    plan = _Plan()
    _module_lines(gm, plan)
    _get_attr_lines(gm, plan)
    plan.tensors, plan.aliases = _weights(gm, plan.tensors)
    plan.frozen = [k for k, p in gm.named_parameters(remove_duplicate=False)
                   if not p.requires_grad and (p.dtype.is_floating_point or p.dtype.is_complex)]
    return plan, gm.graph.python_code(root_module="self")


def _source(gm: torch.fx.GraphModule, plan: _Plan, code: Any, class_name: str, model_name: str) -> str:
    forward = "\n".join(ln.rstrip() for ln in code.src.strip("\n").splitlines()).strip()
    forward = "    " + forward.replace("\n", "\n    ")
    init = "\n".join(f"        {ln}" for ln in plan.init)
    if plan.frozen:
        init += f"\n        for name in {tuple(plan.frozen)!r}:  # frozen in the source model\n"
        init += "            self.get_parameter(name).requires_grad_(False)"
    imports = "\n".join(_imports(gm, code, forward + init))
    n_params = sum(p.numel() for p in gm.parameters())
    return f'''# Generated by archc from {model_name} ({n_params:,} parameters).
# Standalone PyTorch: needs only torch and safetensors (archc is NOT required).
# Weights live next to this file in weights.safetensors.  Usage:
#     from model import load
#     model = load("cpu")      # {class_name} in eval mode
#     y = model(x)
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import load_file
{imports}

WEIGHTS = Path(__file__).with_name("weights.safetensors")
# state-dict keys stored once in the weights file and shared by several names
_ALIASES: dict[str, str] = {plan.aliases!r}
{_HELPERS}

class {class_name}(nn.Module):
    """The compact model, as plain torch.nn modules."""

    def __init__(self) -> None:
        super().__init__()
{init}

{forward}


def load(device="cpu") -> {class_name}:
    """Build {class_name}, load weights.safetensors (strict) and return it in eval mode."""
    state = load_file(str(WEIGHTS), device=str(device))
    for alias, key in _ALIASES.items():
        state[alias] = state[key]
    model = {class_name}()
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()
'''


def python_source(gm: torch.fx.GraphModule, class_name: str = "CompactModel", *, model_name: str | None = None) -> str:
    """Standalone source (torch + safetensors only) defining ``class_name`` and ``load()``.

    Example: ``Path("model.py").write_text(python_source(archc.compact(gated)))``.
    Raises ArchcError naming the module or node that cannot be written as plain PyTorch.
    """
    if not class_name.isidentifier():
        raise ArchcError(f"class_name {class_name!r} is not a Python identifier")
    plan, code = _plan(gm)
    return _source(gm, plan, code, class_name, model_name or _model_name(gm))


def _model_name(gm: torch.fx.GraphModule) -> str:
    return str(gm.meta.get("archc.model_name") or type(gm).__name__)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _import_file(path: Path) -> types.ModuleType:
    """Execute ``path`` as a fresh module (unique name, no bytecode cache left behind)."""
    spec = importlib.util.spec_from_file_location(f"_archc_emitted_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)  # noqa: S102
    return module


def _max_error(want: Any, got: Any) -> float:
    """Largest abs difference over the outputs, relative to max(1, |want|); inf if shapes differ."""
    want_leaves, want_spec = pytree.tree_flatten(want)
    got_leaves, got_spec = pytree.tree_flatten(got)
    if str(want_spec) != str(got_spec):
        return math.inf
    worst = 0.0
    for a, b in zip(want_leaves, got_leaves):
        if not isinstance(a, torch.Tensor):
            worst = max(worst, 0.0 if _same(a, b) else math.inf)
        elif not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return math.inf
        elif a.numel():
            scale = max(1.0, a.detach().abs().max().item())
            worst = max(worst, (a.detach().double() - b.detach().double()).abs().max().item() / scale)
    return worst


def write_model_dir(gm: torch.fx.GraphModule, out_dir: Union[str, os.PathLike], example_inputs: Sequence[Any],
                    *, class_name: str = "CompactModel", model_name: str | None = None) -> Path:
    """Write ``model.py`` + ``weights.safetensors`` to ``out_dir`` and check they reproduce ``gm``.

    Example: ``path = write_model_dir(archc.compact(gated), "out", (x,))`` -> ``out/model.py``.
    Raises CompactionError (and removes both files) when the loaded model's outputs differ.
    """
    plan, code = _plan(gm)
    source = _source(gm, plan, code, class_name, model_name or _model_name(gm))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_py, weights = out / "model.py", out / "weights.safetensors"
    from safetensors.torch import save_file

    try:
        _atomic(weights, lambda tmp: save_file(plan.tensors, str(tmp), metadata={"format": "pt"}))
        _atomic(model_py, lambda tmp: tmp.write_text(source))
        device = next(iter([*gm.parameters(), *gm.buffers()]), torch.empty(0)).device
        training = {m: m.training for m in gm.modules()}
        try:
            with torch.no_grad():
                want = gm.eval()(*example_inputs)
                got = _import_file(model_py).load(device)(*example_inputs)
        finally:
            for m, flag in training.items():
                m.training = flag
        err = _max_error(want, got)
    except Exception as e:
        model_py.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        raise CompactionError(f"the emitted {model_py} failed to load or run: {type(e).__name__}: {e}") from e
    if not err <= 1e-5:
        model_py.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        raise CompactionError(f"the emitted {model_py} differs from the compact graph (max rel error {err:.3g}); "
                              "nothing was kept. Report this model to archc.")
    return model_py
