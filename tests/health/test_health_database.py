"""`database` check: against a real PostgreSQL and MariaDB, private to this module
(helpers/databases.py: started in a fresh data directory, so nothing depends on a
server someone left running and no shared server's users change), plus scripted
servers for the authentication methods those two are not configured with (PostgreSQL
here uses trust; MariaDB here uses mysql_native_password)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import uuid

import pytest
from health_helpers import backend, closed_port, hc
from helpers import databases

from haproxyd.health.base import create_check
from haproxyd.health.database import ScramSha256


def _private(start, package: str):
    try:
        server = start()
    except databases.Unavailable as exc:
        pytest.skip(f"no {exc} to start a private server (apt install {package})")
    yield server.port
    server.stop()


@pytest.fixture(scope="module")
def pg_port():
    yield from _private(databases.start_postgres, "postgresql")


@pytest.fixture(scope="module")
def mysql_port():
    yield from _private(databases.start_mariadb, "mariadb-server mariadb-client")


async def probe(port, **fields):
    return await create_check(hc("database", **fields)).probe(backend(port))


# -- PostgreSQL, real server ---------------------------------------------------------


async def test_pg_without_user_proves_postgres(pg_port):
    result = await probe(pg_port, flavor="postgresql")
    assert result.ok, result.reason
    assert result.reason.startswith("PostgreSQL answered the SSL request")


async def test_pg_login_and_select_1(pg_port):
    result = await probe(pg_port, flavor="postgresql", user="postgres", database="test")
    assert result.ok, result.reason
    assert result.reason == "PostgreSQL: logged in as postgres, SELECT 1 ok"


async def test_pg_unknown_database_fails(pg_port):
    result = await probe(pg_port, flavor="postgresql", user="postgres", database="no_such_db")
    assert not result.ok
    assert result.reason.startswith("PostgreSQL: FATAL 3D000")


async def test_pg_check_against_mariadb_fails(mysql_port):
    result = await probe(mysql_port, flavor="postgresql")
    assert not result.ok
    assert result.reason.startswith("not a PostgreSQL server")
    result = await probe(mysql_port, flavor="postgresql", user="postgres")
    assert not result.ok
    assert result.reason.startswith("not a PostgreSQL server")


async def test_pg_closed_port_fails():
    result = await probe(closed_port(), flavor="postgresql")
    assert not result.ok and result.reason.startswith("connect failed")


# -- MySQL / MariaDB, real server -------------------------------------------------------


async def test_mysql_without_user_reads_the_greeting(mysql_port):
    result = await probe(mysql_port, flavor="mysql")
    assert result.ok, result.reason
    assert "MariaDB" in result.reason


async def test_mysql_login_and_select_1(mysql_port):
    result = await probe(mysql_port, flavor="mysql", user="root", database="test")
    assert result.ok, result.reason
    assert result.reason.endswith("logged in as root, SELECT 1 ok")


async def test_mysql_wrong_password_fails(mysql_port):
    result = await probe(mysql_port, flavor="mysql", user="root", password="wrong")
    assert not result.ok
    assert result.reason.startswith("MySQL login failed: 1045 (28000): Access denied")


async def test_mysql_unknown_database_fails(mysql_port):
    result = await probe(mysql_port, flavor="mysql", user="root", database="no_such_db")
    assert not result.ok
    assert "1049" in result.reason


@pytest.mark.skipif(shutil.which("mysql") is None, reason="no mysql client to create a user")
async def test_mysql_native_password_login(mysql_port):
    user, password = f"hpd_{uuid.uuid4().hex[:8]}", "s3cret-Pw"

    def sql(statement: str) -> None:
        subprocess.run(
            ["mysql", "-h127.0.0.1", f"-P{mysql_port}", "-uroot", "-e", statement],
            check=True,
            timeout=30,
        )

    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        result = await probe(mysql_port, flavor="mysql", user=user, password=password)
        assert result.ok, result.reason
        result = await probe(mysql_port, flavor="mysql", user=user, password="not-it")
        assert not result.ok and "Access denied" in result.reason
    finally:
        sql(f"DROP USER '{user}'@'%'")


async def test_mysql_check_against_another_protocol_fails(tcp_server):
    async def http_ish(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()

    port = await tcp_server(http_ish)
    result = await probe(port, flavor="mysql", user="root")
    assert not result.ok
    assert result.reason.startswith("not a MySQL server")


# -- SCRAM-SHA-256 test vector (RFC 7677 section 3) -------------------------------------


def test_scram_sha_256_rfc7677_vector():
    scram = ScramSha256("pencil", user="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = scram.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# -- scripted PostgreSQL server: cleartext, md5, SCRAM ----------------------------------


def pg_msg(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


async def pg_read(reader) -> tuple[bytes, bytes]:
    kind = await reader.readexactly(1)
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    return kind, await reader.readexactly(length - 4)


def pg_server(method: str, password: str):
    """A PostgreSQL server that authenticates with `method` and answers SELECT 1."""

    async def handler(reader, writer):
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        startup = await reader.readexactly(length - 4)
        items = startup[4:].split(b"\0")
        params = dict(zip(items[0::2], items[1::2], strict=False))
        user = params[b"user"].decode()
        if method == "cleartext":
            writer.write(pg_msg(b"R", struct.pack("!i", 3)))
            _, payload = await pg_read(reader)
            ok = payload == password.encode() + b"\0"
        elif method == "md5":
            salt = os.urandom(4)
            writer.write(pg_msg(b"R", struct.pack("!i", 5) + salt))
            _, payload = await pg_read(reader)
            inner = hashlib.md5((password + user).encode()).hexdigest()
            ok = payload == b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"
        else:
            ok = await scram_server(reader, writer, password)
        if not ok:
            writer.write(pg_msg(b"E", b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"))
            await writer.drain()
            return
        writer.write(pg_msg(b"R", struct.pack("!i", 0)))
        writer.write(pg_msg(b"S", b"server_version\x0015.0\0"))
        writer.write(pg_msg(b"K", struct.pack("!ii", 1, 2)))
        writer.write(pg_msg(b"Z", b"I"))
        kind, query = await pg_read(reader)
        assert (kind, query) == (b"Q", b"SELECT 1\0")
        writer.write(pg_msg(b"T", b"\0\x01?column?\0" + b"\0" * 18))
        writer.write(pg_msg(b"D", struct.pack("!hi", 1, 1) + b"1"))
        writer.write(pg_msg(b"C", b"SELECT 1\0"))
        writer.write(pg_msg(b"Z", b"I"))
        await writer.drain()
        kind, _ = await pg_read(reader)
        assert kind == b"X"

    return handler


async def scram_server(reader, writer, password: str) -> bool:
    """Server side of SCRAM-SHA-256 (RFC 5802 section 3), written from the RFC."""
    writer.write(pg_msg(b"R", struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0"))
    _, payload = await pg_read(reader)
    mechanism, _, rest = payload.partition(b"\0")
    assert mechanism == b"SCRAM-SHA-256"
    client_first = rest[4:].decode()
    first_bare = client_first.split(",", 2)[2]
    client_nonce = dict(p.split("=", 1) for p in first_bare.split(","))["r"]
    salt, iterations = os.urandom(16), 4096
    nonce = client_nonce + base64.b64encode(os.urandom(12)).decode()
    server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
    writer.write(pg_msg(b"R", struct.pack("!i", 11) + server_first.encode()))
    _, client_final = await pg_read(reader)
    without_proof, _, proof = client_final.decode().rpartition(",p=")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
    if hashlib.sha256(client_key).digest() != stored_key:
        return False
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    verifier = base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
    writer.write(pg_msg(b"R", struct.pack("!i", 12) + b"v=" + verifier))
    return True


@pytest.mark.parametrize("method", ["cleartext", "md5", "scram"])
async def test_pg_password_methods(tcp_server, method):
    port = await tcp_server(pg_server(method, "pw-1"))
    result = await probe(port, flavor="postgresql", user="app", password="pw-1")
    assert result.ok, result.reason
    port = await tcp_server(pg_server(method, "pw-1"))
    result = await probe(port, flavor="postgresql", user="app", password="wrong")
    assert not result.ok
    assert "28P01" in result.reason


async def test_pg_password_required_but_not_configured(tcp_server):
    port = await tcp_server(pg_server("md5", "pw-1"))
    result = await probe(port, flavor="postgresql", user="app")
    assert not result.ok
    assert result.reason == "PostgreSQL asks a password for user 'app' and none is configured"


# -- scripted MySQL 8 server: caching_sha2_password, auth switch ------------------------


def mysql_scramble() -> bytes:
    """20 random bytes as a MySQL server makes them: never NUL (the scramble travels
    NUL-terminated, and a client strips the terminator), so a random 0x00 here would
    be a server no real one is."""
    return bytes(b % 127 + 1 for b in os.urandom(20))


def my_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


async def my_read(reader) -> tuple[int, bytes]:
    header = await reader.readexactly(4)
    length = int.from_bytes(header[:3], "little")
    return header[3], await reader.readexactly(length)


def mysql8_server(password: str, mode: str):
    """A MySQL 8 greeting with caching_sha2_password; `mode`: "fast" (cached: fast
    auth), "full" (cache empty: asks for full auth), "switch" (asks the client to
    switch to mysql_native_password)."""
    stage2 = hashlib.sha256(hashlib.sha256(password.encode()).digest()).digest()
    native_stage2 = hashlib.sha1(hashlib.sha1(password.encode()).digest()).digest()

    async def handler(reader, writer):
        scramble = mysql_scramble()
        caps = 0xFFFFF7FF & ~(1 << 24)  # everything but CLIENT_DEPRECATE_EOF
        greeting = (
            b"\x0a8.0.36\0"
            + struct.pack("<I", 7)
            + scramble[:8]
            + b"\0"
            + struct.pack("<HBHH", caps & 0xFFFF, 255, 2, caps >> 16)
            + bytes([21])
            + b"\0" * 10
            + scramble[8:]
            + b"\0"
            + b"caching_sha2_password\0"
        )
        writer.write(my_packet(0, greeting))
        seq, response = await my_read(reader)
        pos = 32
        user_end = response.index(b"\0", pos)
        pos = user_end + 1
        auth = response[pos + 1 : pos + 1 + response[pos]]
        if mode == "switch":
            new_scramble = mysql_scramble()
            writer.write(my_packet(seq + 1, b"\xfemysql_native_password\0" + new_scramble + b"\0"))
            seq, auth = await my_read(reader)
            candidate = bytes(
                a ^ b
                for a, b in zip(
                    auth, hashlib.sha1(new_scramble + native_stage2).digest(), strict=True
                )
            )
            ok = hashlib.sha1(candidate).digest() == native_stage2
        else:
            mask = hashlib.sha256(stage2 + scramble).digest()
            candidate = bytes(a ^ b for a, b in zip(auth, mask, strict=True))
            ok = hashlib.sha256(candidate).digest() == stage2
            if ok and mode == "full":
                writer.write(my_packet(seq + 1, b"\x01\x04"))
                await writer.drain()
                await reader.read()
                return
            if ok:
                seq += 1
                writer.write(my_packet(seq, b"\x01\x03"))
        if not ok:
            writer.write(my_packet(seq + 1, b"\xff\x15\x04#28000Access denied"))
            await writer.drain()
            return
        writer.write(my_packet(seq + 1, b"\x00\x00\x00\x02\x00\x00\x00"))
        seq, query = await my_read(reader)
        assert query == b"\x03SELECT 1"
        writer.write(my_packet(1, b"\x01"))
        writer.write(my_packet(2, b"\x03def\0\0\0\x011\0\x0c\x3f\0\x01\0\0\0\x08\x81\0\0\0\0"))
        writer.write(my_packet(3, b"\xfe\0\0\x02\0"))
        writer.write(my_packet(4, b"\x011"))
        writer.write(my_packet(5, b"\xfe\0\0\x02\0"))
        await writer.drain()
        seq, quit_ = await my_read(reader)
        assert quit_ == b"\x01"

    return handler


@pytest.mark.parametrize("mode", ["fast", "switch"])
async def test_mysql8_caching_sha2_and_auth_switch(tcp_server, mode):
    port = await tcp_server(mysql8_server("pw-8", mode))
    result = await probe(port, flavor="mysql", user="app", password="pw-8")
    assert result.ok, result.reason
    assert result.reason == "MySQL 8.0.36: logged in as app, SELECT 1 ok"
    port = await tcp_server(mysql8_server("pw-8", mode))
    result = await probe(port, flavor="mysql", user="app", password="nope")
    assert not result.ok
    assert "Access denied" in result.reason


async def test_mysql8_full_authentication_is_reported(tcp_server):
    port = await tcp_server(mysql8_server("pw-8", "full"))
    result = await asyncio.wait_for(probe(port, flavor="mysql", user="app", password="pw-8"), 5)
    assert not result.ok
    assert "caching_sha2_password needs full authentication" in result.reason
