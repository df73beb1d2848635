"""Environment overrides, applied in one place before validation.

The seed design let a deployment (a container, a systemd unit) change a few settings
without editing the file: NODE_ID, DISCOVERY_SERVERS, QUORUM_SIZE, ENVIRONMENT and
HAPROXYD_ADMIN_TOKEN; HAPROXYD_REDIS_URL (cluster.redis_url) joins them, so that a
Redis password stays out of the file like the admin token, and one set of files can
point at a plain Redis or at Sentinel (the compose file's `sentinel` profile). They are
written into the document before it is validated, so an
override goes through exactly the same checks as the file; the paths they set are
returned so that a bad value is reported as `env QUORUM_SIZE`, not as a line of a file
that does not contain it. An empty variable counts as unset, so `NODE_ID=` in a unit
file cannot blank a setting by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from haproxyd.config.errors import YamlPath


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _as_is(value: str) -> str:
    return value.strip()


ENV_OVERRIDES: dict[str, tuple[YamlPath, Callable[[str], Any]]] = {
    "NODE_ID": (("node", "id"), _as_is),
    "DISCOVERY_SERVERS": (("cluster", "discovery_servers"), _comma_list),
    "QUORUM_SIZE": (("cluster", "quorum_size"), _as_is),
    "ENVIRONMENT": (("environment",), _as_is),
    "HAPROXYD_ADMIN_TOKEN": (("admin", "token"), _as_is),
    "HAPROXYD_REDIS_URL": (("cluster", "redis_url"), _as_is),
}
"""Variable name -> (the document path it sets, how its text becomes a YAML value)."""


def apply_env_overrides(
    data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[YamlPath, str]]:
    """A copy of `data` with the overrides present in `env` written in, and the paths
    that were set (path -> variable name). `data` itself is not modified.

    A section that is present but not a mapping is left alone: validation reports it,
    and there is no sensible place to put the value.
    """
    document = dict(data)
    applied: dict[YamlPath, str] = {}
    for name, (path, convert) in ENV_OVERRIDES.items():
        raw = env.get(name, "")
        if not raw.strip():
            continue
        *sections, key = path
        target: dict[str, Any] = document
        for section in sections:
            current = target.get(section)
            if current is None:
                current = {}
            elif not isinstance(current, Mapping):
                break
            # Copy each section on the way down: the caller's document stays untouched.
            copied = dict(current)
            target[section] = copied
            target = copied
        else:
            target[str(key)] = convert(raw)
            applied[path] = name
    return document, applied
