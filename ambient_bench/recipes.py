"""Recipes: a method delegates parts of itself to registered components named in the suite.

A method declares ``slots`` (``{"annotate": Slot("annotator", "fixed", ...), "objective": ...}``); a
suite names the component of each slot beside the method's own parameters and sets the chosen
component's parameters there too (``{name: ambient_o, annotate: classifier, epsilon: 0.1}``). Only the
chosen components' parameters exist in the resolved configuration; a parameter of a component the
recipe did not choose is an error naming the one that reads it. The annotate stage's key holds the
method without its objective; the train stage's key holds the objective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, semantic_view, suggest
from ambient_bench.registry import Component


@dataclass(frozen=True)
class Slot:
    """A component a recipe method delegates to, named in the suite beside the method's own
    parameters (``{name: ambient_o, annotate: classifier, epsilon: 0.1}``): the chosen component's
    parameters join the method's, and only the chosen one's."""

    kind: str                 # the registry: "annotator" or "objective"
    default: str              # the component used when the suite names none
    help: str
    role: str | None = None   # annotators only: the samples it annotates ("low_quality" or "ood")


def _slot_class(slot_name: str, slot: Slot, chosen: Any, method: str) -> type[Component]:
    from ambient_bench.registry import REGISTRIES

    registry = REGISTRIES[slot.kind]
    if isinstance(chosen, str):  # the usual case, on every key computation: one lookup, no discovery
        try:
            found = registry.get(chosen)
        except UserError:
            found = None
        if found is not None and (slot.role is None or found.role == slot.role):
            return found
    names = [n for n in registry.names() if slot.role is None or registry.get(n).role == slot.role]
    if not isinstance(chosen, str) or chosen not in names:
        raise ParamError((slot_name,), f"method '{method}': {slot_name} must name one of the {slot.kind}s "
                                       f"{', '.join(names)}, got {chosen!r}" + suggest(str(chosen), names))
    return registry.get(chosen)


class Recipe:
    """The slot machinery of ``components.Method`` (a mixin before ``Component`` in its bases)."""

    slots: ClassVar[dict[str, Slot]] = {}

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.components = {slot: self.slot_class(slot, self.values).build_from(self.values)
                           for slot in self.slots}

    @classmethod
    def slot_class(cls, slot: str, values: dict[str, Any]) -> type[Component]:
        return _slot_class(slot, cls.slots[slot], values.get(slot, cls.slots[slot].default), cls.name)

    @classmethod
    def params_for(cls, given: dict[str, Any]) -> dict[str, Param]:
        params = dict(cls.params)
        for slot_name, slot in cls.slots.items():
            params[slot_name] = Param(slot.default, slot.help, kind=str)
        for slot_name in cls.slots:
            chosen = cls.slot_class(slot_name, given)
            for name, param in chosen.params.items():
                if name in params:
                    raise TypeError(f"method '{cls.name}': {chosen.kind} '{chosen.name}' declares '{name}', which "
                                    f"the method or another of its components declares too")
                params[name] = param
        return params

    @classmethod
    def resolve(cls, given: dict[str, Any], key: tuple = ()) -> dict[str, Any]:
        from ambient_bench.registry import REGISTRIES

        try:
            valid = cls.params_for(given)
        except ParamError as err:
            raise ParamError(key + err.key, err.message) from None
        for name in given:  # a parameter of a component the recipe did not choose: say which one reads it
            if name in valid:
                continue
            for slot_name, slot in cls.slots.items():
                owners = [n for n in REGISTRIES[slot.kind].names() if name in REGISTRIES[slot.kind].get(n).params]
                if owners:
                    chosen = given.get(slot_name, slot.default)
                    raise ParamError(key + (name,), f"method '{cls.name}' does not read {name} with "
                                                    f"{slot_name}: {chosen} ({slot.kind} "
                                                    f"{' / '.join(repr(o) for o in owners)} does); remove it or "
                                                    f"change {slot_name}")
        try:
            resolved = super().resolve(given, key)
        except ParamError as err:
            missing = err.key[len(key):]
            for slot_name in cls.slots:  # say which choice needs it: "annotate: fixed needs sigma_min (...)"
                chosen = cls.slot_class(slot_name, given)
                if err.message.startswith("missing required key") and missing and missing[0] in chosen.params:
                    raise ParamError(err.key, f"{slot_name}: {chosen.name} needs {missing[0]} "
                                              f"({chosen.params[missing[0]].help})") from None
            raise
        for slot_name in cls.slots:
            problem = cls.slot_class(slot_name, resolved).check_params(cls._slot_values(slot_name, resolved))
            if problem:
                raise ParamError(key + (problem[0],), problem[1])
        return resolved

    @classmethod
    def _slot_values(cls, slot: str, values: dict[str, Any]) -> dict[str, Any]:
        chosen = cls.slot_class(slot, values)
        return {name: values[name] for name in chosen.params if name in values}

    @classmethod
    def unused_params(cls, values: dict[str, Any]) -> dict[str, str]:
        unused: dict[str, str] = {}
        for slot in cls.slots:
            unused.update(cls.slot_class(slot, values).unused_params(cls._slot_values(slot, values)))
        return unused

    @classmethod
    def component_versions(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {slot: cls.slot_class(slot, values).key_version() for slot in cls.slots}

    def objective_spec(self) -> dict[str, Any]:
        """The resolved objective: ``{"name": ..., **its parameters}`` (the train stage's)."""
        return {"name": self.values["objective"], **self._slot_values("objective", self.values)}

    def annotation_spec(self) -> dict[str, Any]:
        """What identifies the annotate stage: the method without its objective (enters its key)."""
        objective = set(self.slot_class("objective", self.values).params) | {"objective"}
        values = {k: v for k, v in self.values.items() if k not in objective}
        unused = self.unused_params(self.values)
        params = self.params_for(self.values)
        spec: dict[str, Any] = {"name": self.name, "version": self.key_version(),
                                "params": semantic_view(params, {k: v for k, v in values.items() if k not in unused})}
        components = {slot: version for slot, version in self.component_versions(self.values).items()
                      if slot != "objective"}
        if components:
            spec["components"] = components
        content = self.content_identity()
        return {**spec, "content": content} if content else spec

