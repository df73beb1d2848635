"""schemathesis against a live admin server: no 5xx and no response outside the
OpenAPI document (status codes, content types, headers, bodies)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

import pytest

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("schemathesis") is None,
        reason="schemathesis not installed (pip install schemathesis)",
    ),
]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
CLI = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


async def test_schemathesis_finds_no_5xx_and_no_schema_violation(hap, backend, tmp_path):
    pools = {
        "web": {
            "backends": [backend("web-1").config(), {**backend("web-2").config(), "role": "backup"}]
        },
        "api": {"backends": [backend("api-1").config()]},
    }
    token = "schemathesis-token"
    h = await hap(pools=pools, admin={"token": token})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS")}
    env["NO_COLOR"] = "1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI,
        "run",
        f"{h.admin_url}/api/v1/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        "40",
        "--seed",
        "20240601",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-database",
        "none",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # anything the fuzzed config might write lands here
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 540)
    text = out.decode("utf-8", "replace")
    (tmp_path / "schemathesis.log").write_text(text)
    assert proc.returncode == 0, text[-12000:]
    # the daemon is still serving after the fuzzing
    assert (await h.api("GET", "/api/v1/ha/status")).status == 200
