"""The canonical-head scanner exists only compiled (test_canonical_head.py tests it
there); interpreted, the client and the upstream read every head with llhttp. This
module runs in both forms (helpers/forms.py)."""

from __future__ import annotations

import importlib

import pytest

from haproxyd.proxy import client, upstream


def test_the_scanner_runs_compiled_and_llhttp_reads_every_head_interpreted(form: str) -> None:
    if form == "compiled":
        scanner = importlib.import_module("haproxyd.proxy.canonical_head")
        assert client.scan_request_head is scanner.scan_request_head
        assert upstream.scan_response_head is scanner.scan_response_head
    else:
        # Not built, or (HAPROXYD_PURE_PYTHON=1) kept out beside a compiled build.
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("haproxyd.proxy.canonical_head")
        assert client.scan_request_head is None
        assert upstream.scan_response_head is None
