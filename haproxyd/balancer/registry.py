"""Every balancing algorithm by its config name: its class and the options it reads.

HAProxy gives each algorithm a table of callbacks (`struct lb_ops`); here each algorithm
module also declares a pydantic model of the `balancer:` keys it reads (an option that
several algorithms read is declared once, in the module that implements it: `slow_start`
in slow_start.py, `choices` in random_choice.py, `trusted_proxies` and `hash_query` in
keys.py) and registers `Algorithm(name, cls, options)`. From this registry the config
schema builds the `balancer:` section (the names `algorithm` accepts and every option
with its description) and docs/reference.md lists which algorithms read an option, so a
new algorithm or option is stated in one place.

Registration metadata lives here and in the plain-Python algorithm modules, not in the
compiled ones (base.py, round_robin.py): `base.REGISTRY`, which `create()` reads on the
data plane, is still filled by `base.register`, which `register` below calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from haproxyd.balancer import base

if TYPE_CHECKING:
    from haproxyd.balancer.base import Balancer


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One registered algorithm: `balancer.algorithm: <name>` builds `cls`, which reads
    the keys of `options` (a frozen pydantic model, every field described)."""

    name: str
    cls: type[Balancer]
    options: type[BaseModel]


ALGORITHMS: dict[str, Algorithm] = {}
"""Config name -> Algorithm, in the order of `algorithms.MODULES` (the order the docs and
the schema's error messages list the names in)."""

C = TypeVar("C", bound=type)


def register(options: type[BaseModel]) -> Callable[[C], C]:
    """Class decorator of an algorithm module: register the class under its `name`,
    reading the keys of `options`."""

    def decorate(cls: C) -> C:
        add(cls, options)
        return cls

    return decorate


def add(cls: type[Balancer], options: type[BaseModel]) -> None:
    """Register `cls` (for a compiled module, from `algorithms.py`)."""
    base.register(cls)
    ALGORITHMS[cls.name] = Algorithm(cls.name, cls, options)


def order_by(modules: list[str]) -> None:
    """Put the algorithms in the order of the modules that declare them."""
    rank = {name: i for i, name in enumerate(modules)}
    ordered = sorted(ALGORITHMS.values(), key=lambda a: rank.get(a.cls.__module__, len(rank)))
    ALGORITHMS.clear()
    ALGORITHMS.update((a.name, a) for a in ordered)


def algorithms() -> dict[str, Algorithm]:
    """Every algorithm, once each module has registered itself."""
    import haproxyd.balancer.algorithms  # noqa: F401  (registers as a side effect)

    return ALGORITHMS


def option_names() -> tuple[str, ...]:
    """Every option key of any algorithm, each once, in registration order."""
    names: dict[str, None] = {}
    for algorithm in algorithms().values():
        names.update(dict.fromkeys(algorithm.options.model_fields))
    return tuple(names)


def readers(option: str) -> list[str]:
    """The names of the algorithms that read `option`."""
    return [a.name for a in algorithms().values() if option in a.options.model_fields]


def options_of(section: Any) -> dict[str, Any]:
    """The keyword arguments `base.create` takes for a validated `balancer:` section."""
    return {name: getattr(section, name) for name in option_names() if hasattr(section, name)}
