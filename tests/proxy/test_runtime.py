"""ProxyRuntime's per-request helpers (and the request ids it hands the data plane)."""

from __future__ import annotations

import asyncio

from haproxyd.proxy.request import RequestIds
from haproxyd.proxy.runtime import ProxyRuntime


def test_request_ids_are_prefix_dash_eight_hex_digits_across_table_boundaries():
    loop = asyncio.new_event_loop()
    try:
        runtime = ProxyRuntime(loop)
        prefix = runtime.request_ids.prefix
        assert len(prefix.split(b"-")) == 2  # random part, pid
        for n in range(1, 3 * 4096 + 5):  # three turns of the 4,096-entry table
            assert runtime.request_ids.next() == b"%s-%08x" % (prefix, n)
    finally:
        loop.close()
    ids = RequestIds(b"p", 0xFFFFFFFF - 2)  # past eight digits: nine, as %08x does
    for n in range(0xFFFFFFFF - 1, 0xFFFFFFFF + 4100):
        assert ids.next() == b"p-%08x" % n


def _config(timeouts: str, limits: str):
    from haproxyd.config import load_config_text

    return load_config_text(
        f"timeouts: {timeouts}\nlimits: {limits}\n"
        "pools:\n  web:\n    backends:\n      - {id: b1, address: 127.0.0.1:9}\n"
    )


def _settings(runtime: ProxyRuntime) -> tuple[float | int, ...]:
    return (
        runtime.connect_timeout,
        runtime.header_timeout,
        runtime.response_timeout,
        runtime.idle_timeout,
        runtime.max_header_bytes,
        runtime.max_body_bytes,
    )


def test_apply_copies_the_per_request_settings_and_a_reload_replaces_them():
    loop = asyncio.new_event_loop()
    try:
        runtime = ProxyRuntime(loop)
        runtime.apply(
            _config(
                "{connect: 2s, client_header: 3s, response: 4s, idle: 5s}",
                "{max_header_bytes: 6000, max_body_bytes: 7000}",
            )
        )
        assert _settings(runtime) == (2.0, 3.0, 4.0, 5.0, 6000, 7000)
        runtime.apply(
            _config(
                "{connect: 1s, client_header: 1500ms, response: 1m, idle: 250ms}",
                "{max_header_bytes: 9000, max_body_bytes: 0}",
            )
        )
        assert _settings(runtime) == (1.0, 1.5, 60.0, 0.25, 9000, 0)
        for pool in runtime.pools.values():
            for upstream in pool.upstreams.values():
                upstream.close()
    finally:
        loop.close()


def test_the_access_log_is_one_exchange_listener_while_on_and_none_after_a_reload_off(
    tmp_path,
):
    from haproxyd.config import load_config_text

    def config(enabled: bool):
        return load_config_text(
            f"access_log: {{enabled: {str(enabled).lower()}, path: {tmp_path / 'access.log'}}}\n"
            "pools:\n  web:\n    backends:\n      - {id: b1, address: 127.0.0.1:9}\n"
        )

    loop = asyncio.new_event_loop()
    try:
        runtime = ProxyRuntime(loop)
        metrics = []
        runtime.add_exchange_listener(metrics.append)
        runtime.apply(config(True))
        runtime.apply(config(True))  # a reload that keeps it on: still one writer
        assert len(runtime.exchange_listeners) == 2
        log_file = runtime._access_log
        runtime.apply(config(False))
        assert runtime.exchange_listeners == [metrics.append] and log_file.closed
        runtime.apply(config(True))
        assert len(runtime.exchange_listeners) == 2
        loop.run_until_complete(runtime.stop())
        assert runtime.exchange_listeners == [metrics.append] and runtime._access_log is None
    finally:
        loop.close()


def _tracing_config(tracing: str):
    from haproxyd.config import load_config_text

    return load_config_text(
        f"tracing: {tracing}\n"
        "pools:\n  web:\n    backends:\n      - {id: b1, address: 127.0.0.1:9}\n"
    )


def test_a_reload_keeps_swaps_or_stops_the_span_exporter_and_one_listener():
    loop = asyncio.new_event_loop()
    try:
        runtime = ProxyRuntime(loop)
        base = len(runtime.exchange_listeners)

        def hooked() -> int:
            tracing = runtime.tracing
            ended = [c for c in runtime.exchange_listeners if tracing and c == tracing.ended]
            return len(ended)

        runtime.apply(_tracing_config("{enabled: true, endpoint: 'http://127.0.0.1:9/a'}"))
        first = runtime.span_export
        assert first is not None and runtime.tracing.sink == first.observe and hooked() == 1
        # A new ratio: new ids, the same exporter, still one listener.
        runtime.apply(
            _tracing_config("{enabled: true, endpoint: 'http://127.0.0.1:9/a', sample_ratio: 0.5}")
        )
        assert runtime.span_export is first and hooked() == 1
        assert len(runtime.exchange_listeners) == base + 1
        runtime.apply(_tracing_config("{enabled: true, endpoint: 'http://127.0.0.1:9/b'}"))
        assert runtime.span_export is not first and hooked() == 1
        assert first.close() is None  # retired (never started: nothing to flush)
        runtime.apply(_tracing_config("{enabled: false}"))
        assert runtime.span_export is None and runtime.tracing is None
        assert len(runtime.exchange_listeners) == base
    finally:
        loop.close()
