"""ProxyRuntime's per-request helpers."""

from __future__ import annotations

import asyncio

from haproxyd.proxy.runtime import ProxyRuntime


def test_request_ids_are_prefix_dash_eight_hex_digits_across_table_boundaries():
    loop = asyncio.new_event_loop()
    try:
        runtime = ProxyRuntime(loop)
        prefix = runtime._request_prefix
        for n in range(1, 3 * 4096 + 5):  # three turns of the 4,096-entry table
            assert runtime.next_request_id() == b"%s-%08x" % (prefix, n)
        runtime._request_counter = 0xFFFFFFFF - 2  # past eight digits: nine, as %08x does
        runtime._request_high = b""
        for n in range(0xFFFFFFFF - 1, 0xFFFFFFFF + 4100):
            assert runtime.next_request_id() == b"%s-%08x" % (prefix, n)
    finally:
        loop.close()
