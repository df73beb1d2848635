"""`node:`: this proxy instance."""

from __future__ import annotations

import socket

from pydantic import Field

from haproxyd.config.fields import ID_RE, Section


def _default_node_id() -> str:
    name = socket.gethostname()
    return name if ID_RE.fullmatch(name) else "haproxyd"


class NodeConfig(Section):
    """This proxy instance."""

    id: str = Field(
        default_factory=_default_node_id,
        pattern=ID_RE.pattern,
        description="Node name in the cluster, logs and the admin API; default: the "
        "hostname. The environment variable NODE_ID wins over the file.",
    )
    region: str | None = Field(
        None, min_length=1, description="Region of this node, used by multi-region balancing."
    )
