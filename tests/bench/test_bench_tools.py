"""The parsing and formatting of issue 24's bench rows (bench/_common.py, compare.py,
sweep.py), on made-up figures: no proxy, no wrk, no load. The in-flight burst and the
resumption probe run against tiny loopback peers made here."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import compare  # noqa: E402
import h2bench  # noqa: E402
import sweep  # noqa: E402

from haproxyd.config.loader import load_config  # noqa: E402

SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 12345
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails
Tcp: 1 200 120000 -1 9876 231516 12
Udp: InDatagrams NoPorts
Udp: 5 6
"""

SS = """0 0 127.0.0.1:8080 127.0.0.1:41234
0 0 127.0.0.1:41235 127.0.0.1:8080
0 0 127.0.0.1:18080 127.0.0.1:41236
0 0 127.0.0.1:41237 127.0.0.1:80800
"""


def test_counters_are_parsed() -> None:
    assert _common.parse_passive_opens(SNMP) == 231516
    # local or peer port equal, not a prefix or suffix of another port
    assert _common.parse_ss_ports(SS, 8080) == 2
    assert _common.parse_ss_ports("", 8080) == 0


def test_tls_counter_file_is_parsed() -> None:
    assert _common.parse_tls_count("12 34567\n") == (12, 34567)
    assert _common.parse_tls_count("") is None
    assert _common.parse_tls_count("12") is None


def test_tls_rows_show_the_handshakes_and_flag_full_ones() -> None:
    resumed = {**run(1000, 5.0, 3000, 3000), "tls_full": 50, "tls_resumed": 2950}
    full = {**run(900, 6.0, 2700, 2700), "tls_full": 2700, "tls_resumed": 0}
    results = {"haproxyd": {50: full}, "nginx": {50: resumed}}
    text = sweep.table(results, [50])
    assert "haproxyd TLS resumed / full" in text.splitlines()[0]
    assert text.splitlines()[2].endswith("| 0 / 2,700 | 2,950 / 50 |")
    notes = sweep.notes(results, Namespace(mode="tls-resume", probes={}))
    assert notes == ["haproxyd c=50: 2,700 full TLS handshakes for 0 resumed: the sessions "
                     "were not resumed"]


def test_percentile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]
    assert _common.percentile(xs, 50) == 50.0
    assert _common.percentile(xs, 99) == 99.0
    assert _common.percentile(xs, 100) == 100.0
    assert _common.percentile([7.0], 99) == 7.0
    assert _common.percentile([], 99) == 0.0


def run(req_s: float, p99: float, requests: int, accepted: int | None = None,
        backend: int = 0) -> dict:
    r = {"req_s": req_s, "p99_ms": p99, "requests": requests, "errors": 0}
    if accepted is not None:
        r["client_accepted"], r["backend_closed"] = accepted, backend
    return r


def test_sweep_table_has_both_ratios_and_the_connection_counts() -> None:
    results = {
        "haproxyd": {50: run(4000, 20.0, 12000, 12050)},
        "nginx": {50: run(8000, 10.0, 24000, 24010)},
        "haproxy": {50: run(5000, 40.0, 15000, 15000)},
    }
    text = sweep.table(results, [50])
    head, _, row = text.splitlines()
    assert "haproxyd/nginx req/s" in head and "haproxyd/haproxy p99" in head
    assert "haproxyd client conns per req / backend conns closed" in head
    assert row.startswith("| 50 | 4,000 | 8,000 | 5,000 | 20.0 | 10.0 | 40.0 | - | - | - |")
    assert "| 0.50x | 2.00x | 0.80x | 0.50x |" in row
    assert row.endswith("| 1.00 / 0 | 1.00 / 0 | 1.00 / 0 |")
    o = Namespace(mode="close", probes={})
    assert sweep.notes(results, o) == []
    results["nginx"][50]["proxy_cpu_pct"] = 40.0
    assert "| - | 40 (50) | - |" in sweep.table(results, [50])  # 0.4 s of CPU / 8,000 req
    assert sweep.notes(results, o) == [
        "proxy core under 90 % busy, so that proxy was not the bottleneck (the load core or "
        "other load on the machine was) and its ratios are of the load, not of the proxy: "
        "nginx c=50 40%"]


def test_sweep_notes_say_what_was_not_measured() -> None:
    results = {
        "haproxyd": {50: run(4000, 20.0, 12000, 400)},  # kept the connections open
        "nginx": {50: run(8000, 10.0, 24000, 24000, backend=9000)},  # backend churned
    }
    probes = {"haproxy": {"tls1.3": {"connections": 20, "resumed": 0, "error": ""}}}
    notes = sweep.notes(results, Namespace(mode="close", probes=probes))
    assert any(n.startswith("haproxyd c=50: only 0.03 client connections") for n in notes)
    assert any("9,000 backend connections closed" in n for n in notes)
    assert "haproxy: tls1.3 resumption probe: 0 of 19 resumed" in notes
    # without counts (no `ss`) the table still renders, without those columns
    text = sweep.table({"haproxyd": {10: run(1.0, 1.0, 1)}}, [10, 50])
    assert "conns per req" not in text and "| 50 | - | - | - |" in text


def test_default_levels_follow_the_mode() -> None:
    assert sweep.parse_args(["--mode", "close"]).levels == list(sweep.CLOSE_LEVELS)
    assert sweep.parse_args(["--mode", "tls-keepalive"]).levels == list(sweep.LEVELS)
    assert sweep.parse_args(["--mode", "tls-resume", "--levels", "10,20"]).levels == [10, 20]


def test_scaling_table() -> None:
    one = {p: {"small_req_s": r, "small_p99_ms": 5.0}
           for p, r in (("haproxyd", 5000), ("nginx", 10000), ("haproxy", 8000))}
    two = {p: {"small_req_s": r, "small_p99_ms": 4.0}
           for p, r in (("haproxyd", 9000), ("nginx", 15000), ("haproxy", 12000))}
    lines = compare.scaling_table(one, two).splitlines()
    assert lines[2] == "| haproxyd | 5,000 | 9,000 | 1.80x | 4.00 | - | - |"
    assert lines[3] == "| nginx | 10,000 | 15,000 | 1.50x | 4.00 | 0.50x | 0.60x |"
    assert lines[4] == "| haproxy | 8,000 | 12,000 | 1.50x | 4.00 | 0.62x | 0.75x |"


def test_inflight_rows_in_the_summary() -> None:
    small = {"req_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "proxy_cpu_pct": 99.0, "errors": 0}
    large = {"transfer_Bps": 2.0**20, "p99_ms": 9.0, "proxy_cpu_pct": 90.0, "errors": 0}
    results = {"haproxyd": [{"small": small, "large": large}]}
    inflight = {"p99_ms": 812.0, "max_ms": 900.0, "errors": 3, "rss_peak_kib": 200_000}
    rss = {"haproxyd": {"rss_kib": 100_000, "rss_before_kib": 60_000, "alive": 10_000,
                        "per_conn_bytes": 4096.0, "opened": 10_000, "inflight": inflight}}
    s = compare.summarize(results, rss)["haproxyd"]
    assert s["inflight_errors"] == 3 and s["inflight_p99_ms"] == 812.0
    assert s["inflight_per_conn_KiB"] == pytest.approx(14.0)
    text = compare.table(compare.summarize(results, rss), ["haproxyd"], 10_000)
    assert "| 10,000 conns, a request in flight on each: p99 (ms) | 812.0 |" in text
    assert "|   in flight: RSS per conn (KiB) | 14.0 |" in text


def test_tls_configs_are_alike(tmp_path: Path) -> None:
    tls = {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem"),
           "both": str(tmp_path / "b.pem")}
    nginx = compare.nginx_proxy_conf(tmp_path, 8443, 8080, 1, 0, 20000, tls).read_text()
    assert "listen 127.0.0.1:8443 backlog=4096 ssl;" in nginx
    assert "ssl_session_tickets on;" in nginx and "ssl_session_cache shared:" in nginx
    haproxy = compare.haproxy_conf(tmp_path, 8443, 8080, 1, 0, 20000, tls).read_text()
    assert f"bind 127.0.0.1:8443 ssl crt {tls['both']}" in haproxy
    plain = compare.nginx_proxy_conf(tmp_path, 8443, 8080, 1, 0, 20000).read_text()
    assert " ssl" not in plain.split("listen", 1)[1].split("\n")[0]


def test_haproxyd_tls_config_is_valid(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    tls = {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem"), "both": ""}
    config = load_config(compare.haproxyd_conf(tmp_path, 8443, 8080, 1, 0, tls))
    assert config.listeners[0].tls is not None
    assert config.listeners[0].tls.cert == tls["cert"]


def answer(server: socket.socket, responses: int) -> None:
    """Answer `responses` GETs on one end of a socket pair, then close it."""
    with server:
        for _ in range(responses):
            if not server.recv(4096):
                return
            server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_burst_counts_answers_and_errors() -> None:
    pairs = [socket.socketpair() for _ in range(4)]
    rounds = [2, 2, 2, 1]  # the last peer closes after one answer: an error in round 2
    threads = [threading.Thread(target=answer, args=(b, n)) for (_, b), n in zip(pairs, rounds,
                                                                                strict=True)]
    for t in threads:
        t.start()
    clients = [a for a, _ in pairs]
    try:
        res = _common.burst(clients, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2, round_max=5)
    finally:
        for t in threads:
            t.join(5)
        for c in clients:
            c.close()
    assert res["rounds"] == 2 and res["ok"] == 7 and res["errors"] == 1
    assert res["requests"] == 8 and 0 <= res["p50_ms"] <= res["p99_ms"] <= res["max_ms"]


def test_resumption_probe_sees_resumed_sessions(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    count = 4

    def serve() -> None:
        with listener:
            for _ in range(count):
                conn, _ = listener.accept()
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(4096)
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
                              b"\r\nok")

    t = threading.Thread(target=serve)
    t.start()
    try:
        res = _common.tls_resume_probe(port, count, max_tls12=True)
    finally:
        t.join(10)
    assert res == {"connections": count, "resumed": count - 1, "protocol": "TLSv1.2",
                   "error": ""}


# -- the HTTP/2 rows (bench/h2bench.py) ----------------------------------------------------

H2LOAD_OK = """starting benchmark...
spawning thread #0: 50 total client(s). Timing-based test with 0s of warm-up time and 3s of main duration for measurements.
TLS Protocol: TLSv1.3
Application protocol: h2
finished in 3.00s, 22933.33 req/s, 1.02MB/s
requests: 68800 total, 68800 started, 68800 done, 68790 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 68790 2xx, 0 3xx, 0 4xx, 3 5xx
traffic: 3.05MB (3198000) total, 1.31MB (1376000) headers (space savings 90.50%), 403.12KB (412800) data
"""  # noqa: E501

H2LOAD_REFUSED = """Application protocol: h2c
finished in 2.71ms, 0.00 req/s, 222.62KB/s
requests: 20 total, 1 started, 0 done, 0 succeeded, 20 failed, 20 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_h2load_output_is_parsed() -> None:
    r = h2bench.parse_h2load(H2LOAD_OK)
    assert r["protocol"] == "h2" and r["req_s"] == pytest.approx(22933.33)
    assert (r["total"], r["succeeded"], r["failed"], r["errored"]) == (68800, 68790, 10, 10)
    assert r["status_2xx"] == 68790 and r["bytes"] == 3198000
    assert r["errors"] == 10 + 10 + 3
    assert h2bench.verdict("h2", r) is None


def test_a_proxy_without_h2_gets_a_note_not_a_crash() -> None:
    http1 = h2bench.parse_h2load(H2LOAD_OK.replace("protocol: h2", "protocol: http/1.1"))
    assert h2bench.verdict("h2", http1) == "no h2 (ALPN chose http/1.1)"
    none = h2bench.parse_h2load(H2LOAD_OK.replace("Application protocol: h2\n", ""))
    assert h2bench.verdict("h2", none) == "no h2 (ALPN chose none)"
    refused = h2bench.parse_h2load(H2LOAD_REFUSED)
    assert h2bench.verdict("h2c", refused) == (
        "no h2c (prior-knowledge preface refused: 0 of 20 requests answered)"
    )


def test_h2_table_has_ratios_the_check_and_the_notes() -> None:
    run = {"req_s": 20000.0, "p50_ms": 10.0, "p99_ms": 30.0, "proxy_cpu_pct": 99.0,
           "cpu_us_per_req": 49.5}
    h2 = {
        "results": {
            "h2": {"haproxyd": [dict(run, req_s=6000.0)], "nginx": [run, dict(run, req_s=1.0)]},
            "h2c": {"haproxyd": [], "nginx": [run]},
        },
        "notes": {"h2": {}, "h2c": {"haproxyd": "no h2c (prior-knowledge preface refused)"}},
    }
    text = h2bench.table(h2, ["haproxyd", "nginx"], "-c50 -m10")
    assert "| h2: req/s | 6,000 | 20,000 | 0.30x | - | PASS |" in text
    assert "| h2c: req/s | no h2c | 20,000 | - | - | - |" in text
    assert "| h2: proxy CPU µs/req | 50 | 50 | 1.00x | - |  |" in text
    assert "- haproxyd: no h2c (prior-knowledge preface refused) (h2c)" in text


def test_h2load_log_gives_the_percentiles(tmp_path: Path) -> None:
    log = tmp_path / "h2load.log"
    log.write_text("".join(f"1700000000{i:06d}\t200\t{i * 1000}\n" for i in range(1, 101)))
    lat = h2bench.log_latencies_ms(log)
    assert _common.percentile(lat, 50) == 50.0 and _common.percentile(lat, 99) == 99.0
    argv = h2bench.h2load_argv("https://127.0.0.1:1/", "h2", 5, 50, 10, 1, str(log))
    assert argv[:5] == ["h2load", "-c50", "-m10", "-t1", "-D5"]
    assert "--npn-list=h2,http/1.1" in argv and argv[-1] == "https://127.0.0.1:1/"


def test_h2_listeners_of_the_peers(tmp_path: Path) -> None:
    tls = {"cert": "c.pem", "key": "k.pem", "both": "b.pem"}
    for mode, ssl_word in (("h2", " ssl"), ("h2c", "")):
        nginx = compare.nginx_proxy_conf(
            tmp_path, 8443, 8080, 1, 0, 20000, tls if ssl_word else None,
            compare.H2_NGINX_LISTEN[mode],
        ).read_text()
        assert f"listen 127.0.0.1:8443 backlog=4096{ssl_word} http2;" in nginx
    haproxy = compare.haproxy_conf(
        tmp_path, 8443, 8080, 1, 0, 20000, tls, compare.H2_HAPROXY_BIND["h2"]
    ).read_text()
    assert "bind 127.0.0.1:8443 ssl crt b.pem alpn h2,http/1.1" in haproxy
    haproxy = compare.haproxy_conf(
        tmp_path, 8443, 8080, 1, 0, 20000, None, compare.H2_HAPROXY_BIND["h2c"]
    ).read_text()
    assert "bind 127.0.0.1:8443 proto h2" in haproxy
