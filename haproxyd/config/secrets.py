"""Secrets in a configuration document: which values are secret, how they are shown,
and how a shown one comes back.

`GET /api/v1/ha/config` shows the running config with every secret redacted, and the
documented workflow posts that document back, edited, to `config/update`. A secret sent
back exactly as it was shown means "keep the running value" (Grafana and Kubernetes
dashboards treat a masked field the same way): `restore_secrets` puts the running value
back before validation, so the placeholder is never stored (stored, it would become the
admin token or a Redis password, and the real one would stop working).

Both directions derive from one table, `SECRET_FIELDS`: a key name (any depth, any
case) and how the value under it is redacted. Restoring is "the value shown for the
running value is the value posted", so what may be restored is exactly what was shown,
and no more: a URL whose host was changed while its password stayed redacted is refused,
since keeping the password would send it to the new host.

Pure functions over JSON-like documents, imported by the config error messages (which
never echo a secret) and by the admin API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "<redacted>"


def _whole(value: str) -> str:
    return REDACTED


def redact_url(url: str) -> str:
    """`url` with its password replaced by REDACTED: the password of the userinfo
    (`redis://user:pw@host`) and a `password=` query parameter (`unix:///s.sock?
    password=pw`), the two places redis-py reads one from. Unchanged without one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparseable: nothing of it can be shown safely
    start = url.find("//") + 2 if parts.netloc else 0
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    netloc = f"{user}:{REDACTED}@{hostinfo}" if at and colon and password else parts.netloc
    rest = url[start + len(parts.netloc) :]
    path, question, tail = rest.partition("?")
    if question:
        query, hash_sign, fragment = tail.partition("#")
        fields = []
        for field in query.split("&"):
            name, _, value = field.partition("=")
            if unquote(name) == "password" and value:
                field = f"{name}={REDACTED}"
            fields.append(field)
        rest = f"{path}?{'&'.join(fields)}{hash_sign}{fragment}"
    return url[:start] + netloc + rest


SECRET_FIELDS: dict[str, Callable[[str], str]] = {
    "token": _whole,  # admin.token
    "password": _whole,  # database and redis health checks
    "authorization": _whole,  # an http check's headers
    "proxy-authorization": _whole,
    "cookie": _whole,
    "redis_url": redact_url,  # cluster.redis_url: only the password is secret
}
"""Key name (lower case) -> how a string value under such a key is redacted."""


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_FIELDS


def _redactor(key: object) -> Callable[[str], str] | None:
    return SECRET_FIELDS.get(key.lower()) if isinstance(key, str) else None


def redact_secrets(document: Any) -> Any:
    """A copy of `document` with every secret value redacted."""
    if isinstance(document, dict):
        out = {}
        for key, value in document.items():
            redactor = _redactor(key)
            secret = redactor is not None and isinstance(value, str)
            out[key] = redactor(value) if secret else redact_secrets(value)  # type: ignore[misc]
        return out
    if isinstance(document, list):
        return [redact_secrets(item) for item in document]
    return document


class UnkeptSecrets(ValueError):
    """Redacted secrets that have no running value to keep: where they are."""

    def __init__(self, paths: list[tuple[str | int, ...]]) -> None:
        super().__init__(f"{len(paths)} redacted secret(s) with no running value")
        self.paths = paths


def restore_secrets(document: Any, running: Any) -> Any:
    """A copy of `document` in which each secret that equals the redacted form of the
    running value at the same place (same keys, same list indexes) is that running
    value. Raises UnkeptSecrets when a secret still holds REDACTED after that: it was
    not shown there (a new entry, a renamed pool, an edited URL), and storing it would
    store the placeholder."""
    unkept: list[tuple[str | int, ...]] = []
    restored = _restore(document, running, (), unkept)
    if unkept:
        raise UnkeptSecrets(unkept)
    return restored


def _restore(
    value: Any, running: Any, path: tuple[str | int, ...], unkept: list[tuple[str | int, ...]]
) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            current = running.get(key) if isinstance(running, dict) else None
            redactor = _redactor(key)
            if redactor is not None and isinstance(item, str) and REDACTED in item:
                if isinstance(current, str) and redactor(current) == item:
                    item = current
                else:
                    unkept.append((*path, key))
                out[key] = item
            else:
                out[key] = _restore(item, current, (*path, key), unkept)
        return out
    if isinstance(value, list):
        known = running if isinstance(running, list) else []
        return [
            _restore(item, known[i] if i < len(known) else None, (*path, i), unkept)
            for i, item in enumerate(value)
        ]
    return value
