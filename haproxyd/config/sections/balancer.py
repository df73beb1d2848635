"""`pools.<name>.balancer:`, built from the balancer registry.

The names `algorithm` accepts and the option keys are not written here: each algorithm
module declares the options it reads and registers itself (`haproxyd.balancer.registry`),
and this module combines them. The section stays one flat model holding every
algorithm's options, as it always was: an option another algorithm reads is accepted
(and ignored by the chosen one), so a reload that changes `algorithm` needs no other
edit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, create_model

from haproxyd.balancer.registry import algorithms
from haproxyd.config.fields import Section


def _leaves(models: list[type[BaseModel]]) -> tuple[type[BaseModel], ...]:
    """The distinct option models, less those another one already extends (a base
    listed before its subclass would make no consistent method order)."""
    distinct = list(dict.fromkeys(models))
    return tuple(m for m in distinct if not any(o is not m and issubclass(o, m) for o in distinct))


class _Choice(Section):
    # The last base, so that its field comes first (pydantic collects fields from the
    # bases in reverse method order); `_build` narrows it to the registered names.
    algorithm: str = Field("round_robin", description="The balancing algorithm.")


def _build() -> type[Section]:
    registered = algorithms()
    names = tuple(registered)
    bases = (*_leaves([a.options for a in reversed(registered.values())]), _Choice)
    model = create_model(
        "BalancerConfig",
        __base__=bases,
        __module__=__name__,
        __doc__="How a pool picks a backend for each request.",
        algorithm=(
            Literal[names],  # type: ignore[valid-type]
            Field("round_robin", description="The balancing algorithm."),
        ),
    )
    # Every option model is a Section, so the combination is one too (closed, frozen).
    assert issubclass(model, Section)
    return model


BalancerConfig = _build()
