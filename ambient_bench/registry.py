"""Registries of components (corruptions, datasets, methods, metrics, training objectives, annotators).

A component is a small class with a ``name``, a ``version`` (bump it whenever outputs
change: it enters every stage key that uses the component), declared ``params`` and tiny
``test_params`` for the contract tests. Register it with a decorator::

    from ambient_bench import Corruption, Param, register_corruption

    @register_corruption("salt_and_pepper")
    class SaltAndPepper(Corruption):
        version = 1
        params = {"amount": Param(0.05, "fraction of pixels", gt=0, lt=1)}

Built-in components are registered lazily (``"module:Class"`` strings) so that startup imports
nothing heavy. Third-party packages (and our own ``baselines`` package) register through the
``ambient_bench.plugins`` entry-point group, or a suite's ``plugins:`` list.
"""
from __future__ import annotations

import importlib
from abc import ABC
import importlib.metadata
import importlib.util
import pkgutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, ClassVar, Generic, TypeVar

from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, resolve_params, semantic_view, suggest

PLUGIN_GROUP = "ambient_bench.plugins"


class Component(ABC):
    """Base of every registered component."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    params: ClassVar[dict[str, Param]] = {}
    test_params: ClassVar[dict[str, Any]] = {}
    # where the algorithm comes from when it is not read from its paper ("reconstruction from the abstract
    # (seed notes §3.2)"); shown by `list` and recorded with results
    provenance: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        try:
            self.values = self.resolve(values)
        except ParamError as err:
            raise UserError(f"{self.kind} '{self.name}': {err.message}") from None
        self.p = SimpleNamespace(**self.values)

    @classmethod
    def build_from(cls, values: dict[str, Any]) -> "Component":
        """An instance from a mapping that may hold other components' parameters too (a recipe's)."""
        return cls(**{name: values[name] for name in cls.params if name in values})

    @classmethod
    def params_for(cls, given: dict[str, Any]) -> dict[str, Param]:
        """The parameters these values may set: ``params``, or for a recipe its own plus those of the
        components it names (``components.Method``)."""
        return cls.params

    @classmethod
    def resolve(cls, given: dict[str, Any], key: tuple = ()) -> dict[str, Any]:
        """Defaults filled in, types checked, combinations vetted; raises ``ParamError``."""
        resolved = resolve_params(cls.params_for(given), given, key, what=f"{cls.kind} '{cls.name}'")
        problem = cls.check_params(resolved)
        if problem:
            raise ParamError(key + (problem[0],), problem[1])
        return resolved

    @classmethod
    def component_versions(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The components a recipe delegates to, with their versions (enters keys); {} = none."""
        return {}

    @classmethod
    def check_params(cls, values: dict[str, Any]) -> tuple[str, str] | None:
        """Vet combinations of resolved parameters: (offending key, message) or None."""
        return None

    @classmethod
    def unused_params(cls, values: dict[str, Any]) -> dict[str, str]:
        """Parameters that these values leave unread → the setting that makes them so ("annotate: fixed").
        They never enter a stage key, and setting one explicitly is an error."""
        return {}

    @classmethod
    def key_version(cls) -> int | list[int]:
        """The versions of this class and of every component class it derives from (the base's code
        runs too, so bumping its version must change the subclass's keys); a plain int when only
        the class itself declares one."""
        versions = [klass.__dict__["version"] for klass in cls.__mro__
                    if "version" in klass.__dict__ and klass is not Component]
        return versions[0] if len(versions) == 1 else versions

    @classmethod
    def key_params(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The parameters that enter a stage key: semantic and read with these values."""
        unused = cls.unused_params(values)
        return semantic_view(cls.params_for(values), {k: v for k, v in values.items() if k not in unused})

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def content_identity(self) -> dict[str, Any]:
        """What this component reads from disk that its parameters do not pin down, as content (the
        sha256 of a weights file, never its path); enters stage keys. {} = nothing."""
        return {}

    def spec(self) -> dict[str, Any]:
        """What identifies this component's behaviour: enters stage keys."""
        spec = {"name": self.name, "version": self.key_version(), "params": self.key_params(self.values)}
        components = self.component_versions(self.values)
        if components:
            spec["components"] = components
        content = self.content_identity()
        return {**spec, "content": content} if content else spec

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"{self.name}({args})"


T = TypeVar("T", bound=Component)


class Registry(Generic[T]):
    """Name → component class, with lazy entries and did-you-mean errors.

    Built-ins live one module per component (or family) in ``package``; its modules are
    imported only when a name is not found among the entries already known.
    """

    def __init__(self, kind: str, base: str, package: str | None = None) -> None:
        self.kind = kind
        self._base = base  # "module:Class", resolved on first use (avoids import cycles)
        self._package = package
        self._discovered = package is None
        self._entries: dict[str, type[T] | str] = {}

    def _discover(self) -> None:
        """Import every module of the built-in package once (their decorators register)."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._package}.{module.name}")

    def _base_class(self) -> type:
        module, attr = self._base.split(":")
        return getattr(importlib.import_module(module), attr)

    def add_lazy(self, name: str, target: str) -> None:
        self._entries.setdefault(name, target)

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            base = self._base_class()
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"@register_{self.kind}('{name}'): {cls!r} must subclass {base.__name__}")
            current = self._entries.get(name)
            if isinstance(current, type) and current is not cls and \
                    (current.__module__, current.__qualname__) != (cls.__module__, cls.__qualname__):
                raise UserError(f"{self.kind} '{name}' is registered twice: by {current.__module__}."
                                f"{current.__qualname__} and by {cls.__module__}.{cls.__qualname__}; "
                                f"rename one of them")
            cls.name = name
            cls.kind = self.kind
            self._entries[name] = cls
            return cls
        return decorator

    def get(self, name: str) -> type[T]:
        if name not in self._entries:
            self._discover()
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} '{name}'" + suggest(name, self._entries)
                            + f" (available: {', '.join(sorted(self._entries)) or 'none'})")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":")
            importlib.import_module(module)  # its decorator replaces the lazy entry
            entry = self._entries[name]
            if isinstance(entry, str):
                entry = getattr(importlib.import_module(module), attr)
                self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        self._discover()
        load_plugins()
        return sorted(self._entries)

    def build(self, spec: dict[str, Any]) -> T:
        """Instantiate from a resolved ``{"name": ..., **params}`` mapping."""
        params = {k: v for k, v in spec.items() if k != "name"}
        return self.get(spec["name"])(**params)


_plugins_loaded = False


def load_plugins() -> None:
    """Import every installed plugin module (entry-point group ``ambient_bench.plugins``) once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry_point.load()


def import_plugin(spec: str, base_dir: Path | None = None) -> None:
    """Import a user plugin given as a module name or a path to a ``.py`` file."""
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise UserError(f"plugin file '{path}' not found; give a path relative to the suite file "
                            f"or an importable module name")
        module_name = f"ambient_bench_plugin_{path.stem}"
        if module_name in sys.modules:
            return
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as err:
        raise UserError(f"plugin module '{spec}' cannot be imported ({err}); install it or "
                        f"give a path to a .py file") from None


CORRUPTIONS: Registry = Registry("corruption", "ambient_bench.components:Corruption", "ambient_bench.corruptions")
DATASETS: Registry = Registry("dataset", "ambient_bench.components:Dataset", "ambient_bench.datasets")
METHODS: Registry = Registry("method", "ambient_bench.components:Method", "ambient_bench.methods")
METRICS: Registry = Registry("metric", "ambient_bench.components:Metric", "ambient_bench.metrics")
OBJECTIVES: Registry = Registry("objective", "ambient_bench.components:Objective", "ambient_bench.objectives")
ANNOTATORS: Registry = Registry("annotator", "ambient_bench.components:Annotator", "ambient_bench.annotators")
VIEWS: Registry = Registry("view", "ambient_bench.components:View", "ambient_bench.views")
REGISTRIES: dict[str, Registry] = {r.kind: r for r in (CORRUPTIONS, DATASETS, METHODS, METRICS, OBJECTIVES,
                                                      ANNOTATORS, VIEWS)}

register_corruption = CORRUPTIONS.register
register_dataset = DATASETS.register
register_method = METHODS.register
register_metric = METRICS.register
register_objective = OBJECTIVES.register
register_annotator = ANNOTATORS.register
register_view = VIEWS.register

# Known built-ins, imported on first use without importing their whole package.
CORRUPTIONS.add_lazy("gaussian_blur", "ambient_bench.corruptions.blur:GaussianBlur")
DATASETS.add_lazy("digits", "ambient_bench.datasets.digits:Digits")
METHODS.add_lazy("ambient_o", "ambient_bench.methods.ambient_o:AmbientO")
METRICS.add_lazy("fd_digits", "ambient_bench.metrics.fd_digits:FDDigits")
