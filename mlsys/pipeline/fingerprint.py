"""What a step's result depends on, computed from the code, never declared.

A step's fingerprint hashes its :class:`Basis`:

- **code**: the step function's source, every top-level definition of its own
  module that it reaches by name (helpers, output dataclasses, constants), and
  every first-party module it reaches through imports, transitively (the whole
  file, with the ``__init__`` of each package on the way, which importing it
  runs). Imports are read statically from the source (``ast``), inside
  functions too; first-party means ``mlsys`` and the step's own top-level
  package, so a modeler's own steps are followed the same way.
- **libraries**: the installed versions of the third-party distributions that
  code imports (torch, ray, pyarrow, ...), and the Python version.
- **config**: the config sections the step takes (plus the content hashes of
  files they name; less the keys a section marks placement-only in its
  ``fingerprint_exclude``), and **inputs**: the upstream steps' fingerprints.

:func:`explain` compares two bases and says what changed, so ``mlsys run
--explain`` can tell why a step runs. Plain Python, no Ray.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from mlsys._version import __version__
from mlsys.config import plain

FIRST_PARTY = ("mlsys",)
# Libraries a reached one loads by itself at call time: torch.onnx.export runs onnxscript and onnx.
IMPLIED = {"torch": ("onnx", "onnxscript")}


@dataclass(frozen=True)
class Basis:
    """Everything a step's fingerprint covers; kept in the step's cache manifest."""

    step: str
    code: dict[str, str]  # "mlsys/data/events.py" or "mlsys/pipeline/ctr.py::ingest" -> sha256
    libraries: dict[str, str]  # distribution -> version, plus "python"
    config: dict[str, Any]  # flattened "section.key" -> JSON value
    inputs: dict[str, str]  # parameter -> upstream fingerprint

    def digest(self) -> str:
        payload = {"mlsys": __version__, **dataclasses.asdict(self)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict) -> "Basis":
        return cls(d["step"], d["code"], d["libraries"], d["config"], d["inputs"])


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``flatten("data", {"a": {"b": 1}}) == {"data.a.b": 1}`` (lists stay values)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def config_values(configs: dict[str, Any]) -> dict[str, Any]:
    """Flattened config sections, plus the content hashes of files they name (``fingerprint_extra``).

    A section's ``fingerprint_exclude`` (a class attribute) names its keys that say where a step runs,
    not what it computes (``train.placement_strategy``): they are left out, so moving work reruns nothing.
    """
    out: dict[str, Any] = {}
    for name, cfg in configs.items():
        excluded = set(getattr(cfg, "fingerprint_exclude", ()))
        out.update(flatten(name, {k: v for k, v in plain(cfg).items() if k not in excluded} if excluded else plain(cfg)))
        extra = getattr(cfg, "fingerprint_extra", None)
        for path, digest in (extra() if extra is not None else {}).items():
            out[f"{name}.<file {path}>"] = digest
    return out


def basis(name: str, fn: Callable, configs: dict[str, Any], inputs: dict[str, str]) -> Basis:
    """The basis of step ``name`` whose function is ``fn``."""
    code, third_party = reached_code(fn)
    return Basis(name, code, library_versions(third_party), config_values(configs), dict(sorted(inputs.items())))


# -- code ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Module:
    name: str
    path: Path
    source: str
    tree: ast.Module


@functools.lru_cache(maxsize=1024)
def _parse(source: str, filename: str) -> ast.Module:
    return ast.parse(source, filename)  # keyed by content: an edit within one clock tick is still seen


def _module_file(name: str) -> Path | None:
    """The file of first-party module ``name`` (``pkg/mod.py`` or ``pkg/mod/__init__.py``), found without importing it."""
    top = name.split(".")[0]
    root = _package_root(top)
    if root is None:
        return None
    base = root.joinpath(*name.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_root(top: str) -> Path | None:
    mod = sys.modules.get(top)
    if mod is None:
        import importlib.util

        spec = importlib.util.find_spec(top)
        locations = list(spec.submodule_search_locations or []) if spec else []
    else:
        locations = list(getattr(mod, "__path__", []))
    return Path(locations[0]) if locations else None


def _load(name: str) -> _Module | None:
    path = _module_file(name)
    if path is None:
        return None
    source = path.read_text(encoding="utf-8")
    return _Module(name, path, source, _parse(source, str(path)))


def _aliases(nodes: Iterable[ast.stmt], module: str, is_package: bool) -> dict[str, str]:
    """Names bound by the import statements among ``nodes`` -> the dotted name they stand for."""
    out: dict[str, str] = {}
    for n in nodes:
        if isinstance(n, ast.Import):
            for a in n.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(n, ast.ImportFrom) and n.module != "__future__":
            base = n.module or ""
            if n.level:  # relative: resolved against this module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (n.level - 1)]
                base = ".".join([*parts, *([base] if base else [])])
            for a in n.names:
                out[a.asname or a.name] = f"{base}.*" if a.name == "*" else f"{base}.{a.name}"
    return out


class _Chains(ast.NodeVisitor):
    """The dotted names a statement uses: ``datasets.read_source`` or ``pd``."""

    def __init__(self):
        self.found: set[str] = set()

    def visit_Attribute(self, node: ast.Attribute):
        parts, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            parts.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            self.found.add(".".join([base.id, *reversed(parts)]))
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name):
        self.found.add(node.id)


def _chains(node: ast.AST) -> set[str]:
    v = _Chains()
    v.visit(node)
    return v.found


def _local_names(node: ast.AST) -> set[str]:
    """Parameters and assigned names inside a function or class (they shadow the module's names)."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        return set()
    names = {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
             for a in (*n.posonlyargs, *n.args, *n.kwonlyargs, *(x for x in (n.vararg, n.kwarg) if x))}
    return names | {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _definitions(tree: ast.Module) -> tuple[dict[str, ast.stmt], list[ast.stmt]]:
    """A module's top-level definitions by name, and its other statements (run on import)."""
    defs: dict[str, ast.stmt] = {}
    other: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[stmt.name] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and all(isinstance(t, ast.Name) for t in _targets_of(stmt)):
            for t in _targets_of(stmt):
                defs[t.id] = stmt
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            pass  # bindings: resolved through the alias table
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):  # docstrings aside
            other.append(stmt)
    return defs, other


def _targets_of(stmt: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return list(stmt.targets) if isinstance(stmt, ast.Assign) else [stmt.target]


@dataclass
class _Walk:
    roots: tuple[str, ...]
    code: dict[str, str] = dataclasses.field(default_factory=dict)
    third: set[str] = dataclasses.field(default_factory=set)
    seen: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    todo: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def resolve(self, dotted: str) -> None:
        """Queue the first-party definition a fully qualified dotted name reaches (or note its library)."""
        parts = dotted.split(".")
        if parts[0] not in self.roots:
            if parts[0] and parts[0] != "__future__":
                self.third.add(parts[0])
            return
        for i in range(len(parts), 0, -1):
            module = ".".join(parts[:i])
            if _module_file(module) is not None:
                self.todo.append((module, parts[i] if i < len(parts) else "*"))
                return

    def uses(self, mod: _Module, node: ast.AST, defs: dict, aliases: dict[str, str]) -> None:
        """Queue everything the names used in ``node`` refer to."""
        local = {**aliases, **_aliases((n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))),
                                       mod.name, mod.path.name == "__init__.py")}
        bound = _local_names(node)
        for chain in _chains(node):
            head, _, rest = chain.partition(".")
            if head in local:
                self.resolve(local[head] + (f".{rest}" if rest else ""))
            elif head in defs and head not in bound:
                self.todo.append((mod.name, head))
        for target in local.values():  # an import is a use even where its name is only passed on
            if target.endswith(".*"):
                self.resolve(target[:-2])

    def run(self, module: str, name: str) -> None:
        self.todo.append((module, name))
        while self.todo:
            key = self.todo.pop()
            if key in self.seen:
                continue
            self.seen.add(key)
            self._visit(*key)

    def _visit(self, module: str, name: str) -> None:
        mod = _load(module)
        if mod is None:
            return
        defs, other = _definitions(mod.tree)
        aliases = _aliases(mod.tree.body, module, mod.path.name == "__init__.py")
        where = _display(mod.path)
        if name == "<module>":  # what importing the module runs: its parents' too
            parent = module.rpartition(".")[0]
            if parent:
                self.todo.append((parent, "<module>"))
            if other:
                self.code[f"{where}::<module>"] = _sha("\n".join(ast.unparse(s) for s in other))
                for stmt in other:
                    self.uses(mod, stmt, defs, aliases)
            return
        self.todo.append((module, "<module>"))
        if name == "*":
            self.todo += [(module, n) for n in defs] + [(module, n) for n in aliases]
            return
        if name in aliases:  # a re-export: follow it
            self.code[f"{where}::{name}"] = _sha(f"{name} = {aliases[name]}")
            self.resolve(aliases[name])
            return
        if name not in defs:
            if module.startswith(self.roots) and _module_file(f"{module}.{name}") is not None:
                self.todo.append((f"{module}.{name}", "*"))
            elif "__getattr__" in defs:  # a lazily provided attribute
                self.todo.append((module, "__getattr__"))
            return
        stmt = defs[name]
        self.code[f"{where}::{name}"] = _sha(ast.get_source_segment(mod.source, stmt) or ast.unparse(stmt))
        self.uses(mod, stmt, defs, aliases)


def reached_code(fn: Callable) -> tuple[dict[str, str], set[str]]:
    """``(code digests, third-party top-level imports)`` of every definition ``fn`` reaches.

    Keys are ``path::name`` (a function, class or constant) and ``path::<module>``
    (the statements importing the module runs).

    >>> code, libs = reached_code(ingest.fn)  # doctest: +SKIP
    >>> "mlsys/data/events.py::split_user_events" in code, "pyarrow" in libs  # doctest: +SKIP
    (True, True)
    """
    module = fn.__module__
    if _load(module) is None:
        raise ValueError(f"cannot read the source of module {module!r} (step {fn.__qualname__})")
    walk = _Walk(tuple(dict.fromkeys((*FIRST_PARTY, module.split(".")[0]))))
    walk.run(module, fn.__name__)
    return dict(sorted(walk.code.items())), walk.third


def _display(path: Path) -> str:
    """A path relative to the folder holding its top-level package (``mlsys/data/events.py``)."""
    for parent in path.parents:
        if not (parent / "__init__.py").exists():
            return str(path.relative_to(parent))
    return str(path)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- libraries ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def library_versions(top_level: Iterable[str]) -> dict[str, str]:
    """Installed versions of the distributions providing these top-level imports (stdlib skipped)."""
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    tops = set(top_level)
    tops |= {lib for top in list(tops) for lib in IMPLIED.get(top, ())}
    for top in sorted(tops):
        if top in sys.stdlib_module_names:
            continue
        for dist in _distributions().get(top, []):
            try:
                out[dist.lower()] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


# -- explaining ---------------------------------------------------------------------------


def explain(previous: Basis | None, current: Basis) -> list[str]:
    """Why ``current`` differs from ``previous``: one short line per change (empty: nothing changed).

    >>> explain(old, new)  # doctest: +SKIP
    ['config data.history_length: 20 -> 10', 'code mlsys/data/events.py changed']
    """
    if previous is None:
        return ["never ran with this step's code before"]
    lines = [f"input {k} changed (upstream ran)" for k in sorted(current.inputs) if previous.inputs.get(k) != current.inputs[k]]
    lines += _diff("config", previous.config, current.config, show_values=True)
    lines += _diff("code", previous.code, current.code, show_values=False)
    lines += _diff("library", previous.libraries, current.libraries, show_values=True)
    return lines


def _diff(kind: str, old: dict, new: dict, show_values: bool) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(f"{kind} {key} added" + (f" ({_short(new[key])})" if show_values else ""))
        elif key not in new:
            out.append(f"{kind} {key} removed")
        elif old[key] != new[key]:
            out.append(f"{kind} {key}: {_short(old[key])} -> {_short(new[key])}" if show_values else f"{kind} {key} changed")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
