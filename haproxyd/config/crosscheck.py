"""Checks that span sections: routes name pools, backend ids are unique, sockets differ,
an admin API beyond loopback has a token.

They read the raw document rather than validated models because pydantic runs a model
validator only once every field is valid, and an operator fixing a file wants the
unknown pool of a route reported in the same run as a bad weight further down. The
document may be plain data (a YAML or JSON document) or hold already-built models
(`Config(pools={"web": PoolConfig(...)})`), so every access goes through `_get`;
values of the wrong shape are skipped here because field validation reports them.
Each problem carries its own YAML path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from haproxyd.config.errors import YamlPath, format_path
from haproxyd.config.types import Address, is_loopback, parse_address

Problem = tuple[YamlPath, str]

_WILDCARDS = {"0.0.0.0": "v4", "::": "v6"}


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    if isinstance(obj, BaseModel):
        return getattr(obj, key, None)
    return None


def _has(obj: Any, key: str) -> bool:
    return key in obj if isinstance(obj, Mapping) else _get(obj, key) is not None


def _items(obj: Any) -> list[tuple[int, Any]]:
    return list(enumerate(obj)) if isinstance(obj, list | tuple) else []


def _address(value: Any) -> Address | None:
    try:
        return parse_address(value)
    except ValueError:
        return None


def _route_pools(data: Any) -> list[Problem]:
    pools = _get(data, "pools")
    if not isinstance(pools, Mapping):
        return []
    defined = ", ".join(str(name) for name in pools) or "none"
    problems: list[Problem] = []
    for index, route in _items(_get(data, "routes")):
        pool = _get(route, "pool")
        if isinstance(pool, str) and pool not in pools:
            problems.append(
                (("routes", index, "pool"), f"no pool named {pool!r} (defined pools: {defined})")
            )
    return problems


def _backend_ids(data: Any) -> list[Problem]:
    pools = _get(data, "pools")
    if not isinstance(pools, Mapping):
        return []
    seen: dict[str, YamlPath] = {}
    problems: list[Problem] = []
    for name, pool in pools.items():
        for index, backend in _items(_get(pool, "backends")):
            backend_id = _get(backend, "id")
            if not isinstance(backend_id, str):
                continue
            path: YamlPath = ("pools", name, "backends", index)
            if backend_id in seen:
                problems.append(
                    (
                        (*path, "id"),
                        f"duplicate backend id {backend_id!r}: already used by "
                        f"{format_path(seen[backend_id])} (ids are unique across all pools)",
                    )
                )
            else:
                seen[backend_id] = path
    return problems


def _overlap(a: Address, b: Address) -> bool:
    """Whether two sockets would take the same connections. Port 0 asks the OS for a
    free port, so it never clashes; a wildcard address covers its whole family."""
    if a.port != b.port or a.port == 0:
        return False
    if a.host == b.host:
        return True
    family_a = _WILDCARDS.get(a.host)
    family_b = _WILDCARDS.get(b.host)
    if family_a is not None:
        return family_a == ("v6" if ":" in b.host else "v4")
    if family_b is not None:
        return family_b == ("v6" if ":" in a.host else "v4")
    return False


class _Socket:
    """An address the config binds: where it is written (None: a default), the name to
    give it in a message, the address."""

    __slots__ = ("address", "label", "path")

    def __init__(self, path: YamlPath | None, label: str, address: Address) -> None:
        self.path = path
        self.label = label
        self.address = address


def _address_clashes(data: Any, default_listen: Address, default_admin: Address) -> list[Problem]:
    """Two listeners on one socket would silently share it through SO_REUSEPORT (half
    the connections each), and the admin port on a proxy port cannot start at all."""
    sockets: list[_Socket] = []
    if _has(data, "listeners"):
        for index, listener in _items(_get(data, "listeners")):
            address = _address(_get(listener, "address"))
            if address is not None:
                path: YamlPath = ("listeners", index, "address")
                sockets.append(_Socket(path, format_path(path), address))
    else:
        sockets.append(_Socket(None, f"the default listener {default_listen}", default_listen))
    admin_address = _get(_get(data, "admin"), "address")
    if admin_address is None:
        sockets.append(_Socket(None, f"the default admin address {default_admin}", default_admin))
    else:
        address = _address(admin_address)
        if address is not None:
            sockets.append(_Socket(("admin", "address"), "admin.address", address))
    problems: list[Problem] = []
    for later in range(len(sockets)):
        for earlier in range(later):
            first, second = sockets[earlier], sockets[later]
            if not _overlap(first.address, second.address):
                continue
            # Report at whichever of the two the operator wrote (the later one if both).
            where, other = (second, first) if second.path is not None else (first, second)
            assert where.path is not None  # two defaults never clash
            problems.append(
                (where.path, f"{where.address} clashes with {other.label} ({other.address})")
            )
            break
    return problems


def _open_admin(data: Any) -> list[Problem]:
    """An admin API that anyone on the network can use to change the proxy runs only
    when the operator says so (`admin.insecure`); HAPROXYD_ADMIN_TOKEN is already in
    `data` (environment overrides come first)."""
    admin = _get(data, "admin")
    address = _address(_get(admin, "address"))
    if address is None or is_loopback(address.host):
        return []  # the default is loopback; a bad address is the field's error
    if _get(admin, "token") or _get(admin, "insecure") is True:
        return []
    return [
        (
            ("admin", "address"),
            f"{address} is reachable beyond this machine and there is no admin.token (or "
            "HAPROXYD_ADMIN_TOKEN): set one, bind the admin API to 127.0.0.1, or set "
            "admin.insecure: true to leave it open to anyone who can reach it",
        )
    ]


def cross_check(data: Any, *, default_listen: Address, default_admin: Address) -> list[Problem]:
    """Every cross-section problem of a document, each with the path to report it at."""
    return [
        *_route_pools(data),
        *_backend_ids(data),
        *_address_clashes(data, default_listen, default_admin),
        *_open_admin(data),
    ]
