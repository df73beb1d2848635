"""`database` check: speak PostgreSQL's or MySQL's wire protocol, far enough to prove it.

Like HAProxy's `option pgsql-check` and `option mysql-check`, but written on asyncio
streams with no driver:

PostgreSQL (frontend/backend protocol 3.0, PostgreSQL docs chapter 55):
  * no `user`: an SSLRequest; a PostgreSQL server answers one byte, `S` or `N`. On `S`
    the TLS handshake is completed before closing. PostgreSQL logs nothing for a client
    that leaves before its startup packet, so this probe leaves no trace in its log.
  * `user` given: a StartupMessage, authentication (trust, cleartext, md5, SCRAM-SHA-256
    per RFC 5802/7677), `SELECT 1` with the simple query protocol, Terminate.
MySQL/MariaDB (client/server protocol, handshake v10, MySQL internals manual):
  * no `user`: read the server greeting (or its error packet, e.g. "Too many
    connections") and close. As HAProxy's manual warns for mysql-check without a user,
    the server counts that as an aborted connect, and from a non-loopback address each
    one counts towards `max_connect_errors` (the host gets blocked after 100 by default
    unless a login succeeds in between): configure a user (one with no privileges and
    an empty password is enough).
  * `user` given: HandshakeResponse41 with mysql_native_password or
    caching_sha2_password (fast path), auth-switch requests for either, `SELECT 1`,
    COM_QUIT. caching_sha2's full authentication needs TLS or an RSA exchange, which
    this check does not do: it reports that plainly instead.
Cost: one connection and a handful of small messages per probe; SCRAM's PBKDF2 key is
cached per (password, salt, iterations) so repeated probes do not pay for it again.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
import ssl
import struct
import time
from typing import TYPE_CHECKING, Any

from haproxyd.health.base import Check, CheckResult, clip, close_writer, register

if TYPE_CHECKING:
    from haproxyd.balancer.state import Backend
    from haproxyd.config.sections.health import DatabaseCheck as DatabaseCheckConfig

MAX_MESSAGE = 1 << 20  # bytes; a longer message during a health check means a wrong peer


class DatabaseCheckError(Exception):
    """The server did not answer as the expected database, or refused the login."""


@register
class DatabaseCheck(Check):
    type = "database"

    def __init__(self, config: DatabaseCheckConfig) -> None:
        super().__init__(config)
        self.port = config.port
        self.flavor = config.flavor
        if self.flavor not in ("postgresql", "mysql"):
            raise ValueError(f"database flavor must be postgresql or mysql, not {self.flavor!r}")
        self.user = config.user
        self.password = config.password
        self.database = config.database

    def describe(self) -> str:
        return f"database {self.flavor}" + (f" as {self.user}" if self.user else "")

    async def probe(self, backend: Backend | None) -> CheckResult:
        if backend is None:
            return CheckResult(False, "database check needs a backend")
        host, port = self.target(backend)
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return CheckResult(False, f"connect failed: {exc.strerror or exc}", _since(start))
        try:
            if self.flavor == "postgresql":
                reason = await postgres_probe(
                    reader, writer, self.user, self.password, self.database
                )
            else:
                reason = await mysql_probe(reader, writer, self.user, self.password, self.database)
        except DatabaseCheckError as exc:
            return CheckResult(False, str(exc), _since(start))
        except asyncio.IncompleteReadError as exc:
            detail = f" after {clip(exc.partial, 60)!r}" if exc.partial else ""
            return CheckResult(
                False, f"{self.flavor}: server closed the connection{detail}", _since(start)
            )
        except (OSError, ssl.SSLError) as exc:
            return CheckResult(
                False, f"{self.flavor}: connection error: {exc.strerror or exc}", _since(start)
            )
        finally:
            # A graceful close, not HAProxy's RST: PostgreSQL logs "connection reset by
            # peer" for an RST but nothing for a client that leaves quietly.
            await close_writer(writer, reset=False)
        return CheckResult(True, reason, _since(start))


def _since(start: float) -> float:
    return time.perf_counter() - start


# -- PostgreSQL ----------------------------------------------------------------------

PG_PROTOCOL_3 = 196608
PG_SSL_REQUEST = 80877103
# Backend message types a server may send during startup and a simple query.
_PG_TYPES = frozenset(b"RSKZENTDCIvn")


async def postgres_probe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    user: str | None,
    password: str | None,
    database: str | None,
) -> str:
    """Prove a PostgreSQL server; log in and run SELECT 1 when `user` is given.
    Returns the reason of a pass; raises DatabaseCheckError."""
    if not user:
        writer.write(struct.pack("!ii", 8, PG_SSL_REQUEST))
        await writer.drain()
        reply = await reader.read(1)
        if reply == b"N":
            return "PostgreSQL answered the SSL request"
        if reply == b"S":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            await writer.start_tls(context)
            return "PostgreSQL answered the SSL request (TLS ok)"
        if not reply:
            raise DatabaseCheckError("not a PostgreSQL server: closed without answering")
        raise DatabaseCheckError(f"not a PostgreSQL server: answered {reply!r}")

    params = {
        "user": user,
        "database": database or user,
        "application_name": "haproxyd-health",
        "client_encoding": "UTF8",
    }
    body = struct.pack("!i", PG_PROTOCOL_3)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    writer.write(struct.pack("!i", len(body) + 4) + body)
    await writer.drain()

    scram: ScramSha256 | None = None
    first = True
    while True:
        kind, payload = await _pg_read(reader, first)
        first = False
        if kind == b"R":
            code = struct.unpack("!i", payload[:4])[0]
            if code == 0:
                continue
            if code in (3, 5, 10) and password is None:
                raise DatabaseCheckError(
                    f"PostgreSQL asks a password for user {user!r} and none is configured"
                )
            if code == 3:
                _pg_send(writer, b"p", password.encode() + b"\0")
            elif code == 5:
                _pg_send(writer, b"p", pg_md5_password(user, password, payload[4:8]) + b"\0")
            elif code == 10:
                mechanisms = [m.decode() for m in payload[4:].split(b"\0") if m]
                if "SCRAM-SHA-256" not in mechanisms:
                    raise DatabaseCheckError(
                        f"PostgreSQL offers SASL {', '.join(mechanisms)}; only SCRAM-SHA-256 "
                        "is supported"
                    )
                scram = ScramSha256(password)
                first_message = scram.client_first()
                _pg_send(
                    writer,
                    b"p",
                    b"SCRAM-SHA-256\0" + struct.pack("!i", len(first_message)) + first_message,
                )
            elif code == 11 and scram is not None:
                _pg_send(writer, b"p", scram.client_final(payload[4:]))
            elif code == 12 and scram is not None:
                scram.verify_server_final(payload[4:])
            else:
                raise DatabaseCheckError(f"PostgreSQL authentication method {code} not supported")
            await writer.drain()
        elif kind == b"E":
            raise DatabaseCheckError(f"PostgreSQL: {_pg_error(payload)}")
        elif kind == b"Z":
            break
        # S (parameter status), K (cancel key), N (notice), v: nothing to do.

    query = b"SELECT 1"
    _pg_send(writer, b"Q", query + b"\0")
    await writer.drain()
    value = None
    while True:
        kind, payload = await _pg_read(reader)
        if kind == b"D" and value is None:
            (columns,) = struct.unpack("!h", payload[:2])
            if columns >= 1:
                (length,) = struct.unpack("!i", payload[2:6])
                value = payload[6 : 6 + length] if length >= 0 else None
        elif kind == b"E":
            raise DatabaseCheckError(f"PostgreSQL SELECT 1 failed: {_pg_error(payload)}")
        elif kind == b"Z":
            break
    _pg_send(writer, b"X", b"")
    await writer.drain()
    if value != b"1":
        raise DatabaseCheckError(f"PostgreSQL SELECT 1 returned {value!r}")
    return f"PostgreSQL: logged in as {user}, SELECT 1 ok"


async def _pg_read(reader: asyncio.StreamReader, first: bool = False) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    kind = header[:1]
    (length,) = struct.unpack("!i", header[1:])
    if header[0] not in _PG_TYPES or not 4 <= length <= MAX_MESSAGE:
        what = "not a PostgreSQL server" if first else "PostgreSQL protocol error"
        raise DatabaseCheckError(f"{what}: unexpected reply {clip(header, 40)!r}")
    return kind, await reader.readexactly(length - 4)


def _pg_send(writer: asyncio.StreamWriter, kind: bytes, payload: bytes) -> None:
    writer.write(kind + struct.pack("!i", len(payload) + 4) + payload)


def _pg_error(payload: bytes) -> str:
    """ErrorResponse fields -> "FATAL 28P01: password authentication failed ..."."""
    fields: dict[str, str] = {}
    for item in payload.split(b"\0"):
        if item:
            fields[chr(item[0])] = item[1:].decode("utf-8", "replace")
    severity = fields.get("V") or fields.get("S") or "ERROR"
    return clip(f"{severity} {fields.get('C', '?')}: {fields.get('M', '')}")


def pg_md5_password(user: str, password: str, salt: bytes) -> bytes:
    """`md5` + md5(md5(password + user) + salt), hex (PostgreSQL's AuthenticationMD5)."""
    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


@functools.lru_cache(maxsize=64)
def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


class ScramSha256:
    """Client side of SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677).

    PostgreSQL takes the user from the startup packet and ignores the SCRAM user name,
    so it is empty by default. `nonce` is injectable for the RFC 7677 test vector.
    """

    def __init__(self, password: str, *, user: str = "", nonce: str | None = None) -> None:
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={name},r={self.nonce}"
        self._server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i")
        if not nonce.startswith(self.nonce) or salt is None or iterations is None:
            raise DatabaseCheckError("SCRAM: malformed server-first message")
        salted = _salted_password(self.password, base64.b64decode(salt), int(iterations))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        text = server_final.decode()
        if text.startswith("e="):
            raise DatabaseCheckError(f"SCRAM: server error {text[2:]}")
        if not text.startswith("v=") or not hmac.compare_digest(
            base64.b64decode(text[2:]), self._server_signature
        ):
            raise DatabaseCheckError("SCRAM: the server's signature does not match")


# -- MySQL / MariaDB -------------------------------------------------------------------

CLIENT_LONG_PASSWORD = 1
CLIENT_LONG_FLAG = 4
CLIENT_CONNECT_WITH_DB = 8
CLIENT_PROTOCOL_41 = 512
CLIENT_TRANSACTIONS = 8192
CLIENT_SECURE_CONNECTION = 32768
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PLUGIN_AUTH = 1 << 19
UTF8MB4_GENERAL_CI = 45


async def mysql_probe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    user: str | None,
    password: str | None,
    database: str | None,
) -> str:
    """Prove a MySQL/MariaDB server; log in and run SELECT 1 when `user` is given.
    Returns the reason of a pass; raises DatabaseCheckError."""
    seq, greeting = await _my_read(reader, first=True)
    if greeting[:1] == b"\xff":
        raise DatabaseCheckError(f"MySQL refused the connection: {_my_error(greeting)}")
    if greeting[:1] != b"\x0a":
        raise DatabaseCheckError(
            f"not a MySQL server: greeting {clip(greeting[:40], 40)!r} is not protocol 10"
        )
    hello = _parse_greeting(greeting)
    version = hello["version"].removeprefix("5.5.5-")  # MariaDB's replication prefix
    if not user:
        return f"MySQL {version} answered"
    if not hello["capabilities"] & CLIENT_PROTOCOL_41:
        raise DatabaseCheckError(f"MySQL {version} does not speak protocol 4.1")

    wanted = (
        CLIENT_LONG_PASSWORD
        | CLIENT_LONG_FLAG
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH
        | (CLIENT_CONNECT_WITH_DB if database else 0)
    )
    capabilities = wanted & hello["capabilities"]
    plugin = hello["plugin"] or "mysql_native_password"
    scramble = hello["scramble"]
    auth = mysql_auth_response(plugin, password or "", scramble)
    response = struct.pack("<IIB", capabilities, 1 << 24, UTF8MB4_GENERAL_CI) + b"\0" * 23
    response += user.encode() + b"\0" + bytes([len(auth)]) + auth
    if capabilities & CLIENT_CONNECT_WITH_DB:
        response += database.encode() + b"\0"
    if capabilities & CLIENT_PLUGIN_AUTH:
        response += plugin.encode() + b"\0"
    seq = (seq + 1) & 0xFF
    writer.write(_my_packet(seq, response))
    await writer.drain()

    while True:
        seq, packet = await _my_read(reader)
        marker = packet[:1]
        if marker == b"\x00":
            break
        if marker == b"\xff":
            raise DatabaseCheckError(f"MySQL login failed: {_my_error(packet)}")
        if marker == b"\xfe":  # auth switch request
            if len(packet) == 1:
                raise DatabaseCheckError("MySQL asks for the old pre-4.1 password scheme")
            name, _, data = packet[1:].partition(b"\0")
            plugin = name.decode()
            scramble = data.rstrip(b"\0")
            auth = mysql_auth_response(plugin, password or "", scramble)
        elif marker == b"\x01" and plugin == "caching_sha2_password":
            if packet[1:2] == b"\x03":  # fast authentication succeeded; OK follows
                continue
            if packet[1:2] == b"\x04":
                raise DatabaseCheckError(
                    "MySQL caching_sha2_password needs full authentication (TLS or RSA key "
                    "exchange), which this check does not do: log in once with the mysql "
                    "client to fill the server's cache, or give this user "
                    "mysql_native_password"
                )
            raise DatabaseCheckError(f"MySQL: unexpected auth data {clip(packet, 40)!r}")
        else:
            raise DatabaseCheckError(f"MySQL: unexpected packet {clip(packet[:40], 40)!r}")
        seq = (seq + 1) & 0xFF
        writer.write(_my_packet(seq, auth))
        await writer.drain()

    writer.write(_my_packet(0, b"\x03SELECT 1"))
    await writer.drain()
    _, packet = await _my_read(reader)
    if packet[:1] == b"\xff":
        raise DatabaseCheckError(f"MySQL SELECT 1 failed: {_my_error(packet)}")
    columns, _ = _lenenc_int(packet, 0)
    if packet[:1] == b"\x00" or not columns:
        raise DatabaseCheckError("MySQL SELECT 1 returned no result set")
    for _ in range(columns):
        await _my_read(reader)  # column definitions
    await _my_read(reader)  # EOF after the definitions (CLIENT_DEPRECATE_EOF not asked)
    value = None
    while True:
        _, packet = await _my_read(reader)
        if packet[:1] == b"\xff":
            raise DatabaseCheckError(f"MySQL SELECT 1 failed: {_my_error(packet)}")
        if packet[:1] == b"\xfe" and len(packet) < 9:
            break
        if value is None and packet[:1] != b"\xfb":  # 0xfb: NULL
            length, pos = _lenenc_int(packet, 0)
            value = packet[pos : pos + length]
    writer.write(_my_packet(0, b"\x01"))  # COM_QUIT
    await writer.drain()
    if value != b"1":
        raise DatabaseCheckError(f"MySQL SELECT 1 returned {value!r}")
    return f"MySQL {version}: logged in as {user}, SELECT 1 ok"


def mysql_auth_response(plugin: str, password: str, scramble: bytes) -> bytes:
    """The auth-response bytes of `plugin` for `password` and the server's scramble."""
    scramble = scramble[:20]
    if plugin == "mysql_native_password":
        if not password:
            return b""
        stage1 = hashlib.sha1(password.encode()).digest()
        stage2 = hashlib.sha1(stage1).digest()
        mask = hashlib.sha1(scramble + stage2).digest()
        return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    if plugin == "caching_sha2_password":
        if not password:
            return b""
        stage1 = hashlib.sha256(password.encode()).digest()
        stage2 = hashlib.sha256(stage1).digest()
        mask = hashlib.sha256(stage2 + scramble).digest()
        return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    raise DatabaseCheckError(
        f"MySQL authentication plugin {plugin!r} is not supported "
        "(use mysql_native_password or caching_sha2_password)"
    )


def _parse_greeting(payload: bytes) -> dict[str, Any]:
    try:
        end = payload.index(b"\0", 1)
        version = payload[1:end].decode("utf-8", "replace")
        pos = end + 1 + 4  # connection id
        scramble = payload[pos : pos + 8]
        pos += 8 + 1  # filler
        (capabilities,) = struct.unpack("<H", payload[pos : pos + 2])
        pos += 2
        plugin = ""
        if len(payload) > pos:
            pos += 1 + 2  # character set, status flags
            (upper,) = struct.unpack("<H", payload[pos : pos + 2])
            capabilities |= upper << 16
            pos += 2
            data_length = payload[pos]
            pos += 1 + 10  # reserved (MariaDB keeps its extended capabilities there)
            if capabilities & CLIENT_SECURE_CONNECTION:
                count = max(13, data_length - 8)
                scramble += payload[pos : pos + count].rstrip(b"\0")
                pos += count
            if capabilities & CLIENT_PLUGIN_AUTH:
                plugin = payload[pos:].split(b"\0", 1)[0].decode()
    except (ValueError, IndexError, struct.error):
        raise DatabaseCheckError("not a MySQL server: malformed greeting") from None
    return {
        "version": version,
        "capabilities": capabilities,
        "scramble": scramble,
        "plugin": plugin,
    }


async def _my_read(reader: asyncio.StreamReader, first: bool = False) -> tuple[int, bytes]:
    header = await reader.readexactly(4)
    length = header[0] | header[1] << 8 | header[2] << 16
    if length > MAX_MESSAGE or (first and (header[3] != 0 or length < 1)):
        what = "not a MySQL server" if first else "MySQL protocol error"
        raise DatabaseCheckError(f"{what}: unexpected reply {clip(header, 40)!r}")
    return header[3], await reader.readexactly(length)


def _my_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def _my_error(packet: bytes) -> str:
    """ERR packet -> "1045 (28000): Access denied for user ..."."""
    if len(packet) < 3:
        return "error"
    (code,) = struct.unpack("<H", packet[1:3])
    message = packet[3:]
    state = ""
    if message[:1] == b"#":
        state, message = f" ({message[1:6].decode('ascii', 'replace')})", message[6:]
    return clip(f"{code}{state}: {message.decode('utf-8', 'replace')}")


def _lenenc_int(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:
        return 0, pos + 1
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size
