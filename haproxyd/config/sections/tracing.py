"""`tracing:`: W3C trace context on every request, spans exported over OTLP/HTTP."""

from __future__ import annotations

from importlib.util import find_spec

from pydantic import Field, field_validator

from haproxyd.config.fields import Section

TRACING_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
"""What `tracing.enabled: true` needs installed (the optional extra `[tracing]`)."""


def missing_tracing_modules() -> list[str]:
    """The modules of the `[tracing]` extra that are not installed (empty: all are)."""
    missing = []
    for name in TRACING_MODULES:
        try:
            found = find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


class TracingConfig(Section):
    """Trace context and span export (reloadable)."""

    enabled: bool = Field(
        False,
        description="Propagate a W3C traceparent to every backend (the client's trace "
        "kept when valid, a new one started otherwise) and export one server span per "
        "request. Needs the optional extra: pip install 'haproxyd[tracing]'.",
    )
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        pattern=r"^https?://",
        description="OTLP/HTTP traces endpoint of the collector (the full URL, path included).",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces whose spans are exported; a request carrying a "
        "traceparent follows its sampled flag instead.",
    )
    service_name: str = Field(
        "haproxyd", min_length=1, description="The spans' service.name resource attribute."
    )
    echo_trace_id: bool = Field(
        False,
        description="Answer every request with its trace id in an `X-Trace-ID` header "
        "(errors the proxy answers itself included), for finding a request's trace from "
        "a client's report.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP headers sent with every export (a collector's credentials; an "
        "`authorization` value is redacted by the admin API).",
    )

    @field_validator("enabled")
    @classmethod
    def _sdk_installed(cls, value: bool) -> bool:
        # Checked here, not at the first export, so that `haproxyd check` and a reload
        # say what is missing instead of a worker failing later.
        if value:
            missing = missing_tracing_modules()
            if missing:
                raise ValueError(
                    f"tracing needs {', '.join(missing)}: pip install 'haproxyd[tracing]' "
                    "(opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http)"
                )
        return value
