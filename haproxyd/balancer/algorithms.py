"""Imports every algorithm module so that each registers itself (`registry.py`).

The order of `MODULES` is the order of `registry.ALGORITHMS`, in which the docs and
the config's error messages list the algorithm names.
"""

from haproxyd.balancer import registry, round_robin
from haproxyd.balancer.slow_start import SlowStartOptions

# round_robin.py is compiled (round_robin.pxd), so its registration is made here,
# beside the others, rather than in a pydantic declaration Cython would compile.
registry.add(round_robin.RoundRobin, SlowStartOptions)

from haproxyd.balancer import (  # noqa: E402  (each registers itself on import)
    ip_hash,
    least_connections,
    least_response_time,
    random_choice,
    ring,
    url_hash,
    weighted_round_robin,
)

# One module imports another (least_connections imports random_choice), so the order
# of registration is not the order of the list above: this tuple states it.
MODULES = (
    round_robin,
    weighted_round_robin,
    least_connections,
    least_response_time,
    ip_hash,
    url_hash,
    random_choice,
    ring,
)
registry.order_by([module.__name__ for module in MODULES])
