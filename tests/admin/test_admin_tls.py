"""`admin.tls`: the admin API over HTTPS, and with `client_ca` only to clients holding a
certificate of that CA (certificates made by trustme; every connection is real)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(60)

STATUS = "/api/v1/ha/status"
BACKENDS = "/api/v1/ha/load-balancer/backends"


@dataclass
class AdminPKI:
    cert: Path  # the admin API's chain and key, for 127.0.0.1 and localhost
    key: Path
    client_ca: Path  # the CA whose clients the admin API accepts
    trusting: ssl.SSLContext  # trusts the server, presents no certificate
    operator: ssl.SSLContext  # trusts the server, presents a client_ca certificate
    stranger: ssl.SSLContext  # trusts the server, presents another CA's certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> AdminPKI:
    import trustme

    folder = tmp_path_factory.mktemp("admin-tls")
    server_ca, clients_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    cert, key, client_ca = folder / "admin.pem", folder / "admin.key", folder / "clients.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    clients_ca.cert_pem.write_to_path(str(client_ca))

    def context(client_ca: trustme.CA | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        server_ca.configure_trust(ctx)
        if client_ca is not None:
            client_ca.issue_cert("operator@example").configure_cert(ctx)
        return ctx

    return AdminPKI(cert, key, client_ca, context(None), context(clients_ca), context(other_ca))


def session(h, context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    s = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20))
    h.extra_sessions.append(s)
    return s


async def test_admin_api_over_https(hap, backend, pki):
    h = await hap([backend("web-1")], admin={"tls": {"cert": str(pki.cert), "key": str(pki.key)}})
    url = h.admin_url
    assert url.startswith("https://127.0.0.1:")
    https = session(h, pki.trusting)
    async with https.get(url + STATUS) as resp:
        assert resp.status == 200
        assert (await resp.json())["node_id"] == "test-node"
    # Its own origin is now https://...; the http:// one is another origin.
    for origin, status in ((url.replace("https", "http"), 403), (url, 200)):
        async with https.patch(
            f"{url}{BACKENDS}/web-1", json={"weight": 2}, headers={"Origin": origin}
        ) as resp:
            assert resp.status == status, origin
    assert h.backend("web-1").weight == 2
    # Plain HTTP on the TLS port gets no answer from the API.
    plain = session(h, None)
    with pytest.raises(aiohttp.ClientError):
        async with plain.get(url.replace("https", "http") + STATUS) as resp:
            await resp.read()


async def test_client_certificates_when_client_ca_is_set(hap, backend, pki):
    tls = {"cert": str(pki.cert), "key": str(pki.key), "client_ca": str(pki.client_ca)}
    h = await hap([backend("web-1")], admin={"tls": tls})
    url = h.admin_url
    for refused in (pki.trusting, pki.stranger):
        https = session(h, refused)
        with pytest.raises(aiohttp.ClientError):
            async with https.patch(f"{url}{BACKENDS}/web-1", json={"state": "maint"}) as resp:
                await resp.read()
    assert str(h.backend("web-1").state) == "up", "a refused client changed the backend"
    https = session(h, pki.operator)
    async with https.get(url + STATUS) as resp:
        assert resp.status == 200
    async with https.patch(f"{url}{BACKENDS}/web-1", json={"state": "maint"}) as resp:
        assert resp.status == 200
    assert str(h.backend("web-1").state) == "maint"
