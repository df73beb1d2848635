"""Command line: `haproxyd [run] -c FILE`, `check`, `version`, `demo`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from haproxyd import __version__

log = logging.getLogger("haproxyd")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop every haproxyd process runs: uvloop."""
    import uvloop

    return uvloop.new_event_loop()


def cmd_check(args: argparse.Namespace) -> int:
    from haproxyd.config import ConfigError, load_config

    try:
        load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        print(f"configuration has {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    print("configuration OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from haproxyd.config import ConfigError, load_config
    from haproxyd.daemon import Daemon, StartupError
    from haproxyd.heap import tune_gc

    _setup_logging(args.log_level)
    # Absolute (the status API shows it, `haproxyd reload` compares it) but with its
    # symlinks kept: a reload reads whatever the link points to then.
    path = Path(os.path.abspath(args.config))
    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"haproxyd: {issue}", file=sys.stderr)
        print("haproxyd: invalid configuration, not starting", file=sys.stderr)
        return 2
    pid_file = Path(args.pid_file) if args.pid_file else None
    tune_gc()
    daemon = Daemon(config, config_path=path, pid_file=pid_file)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        try:
            return runner.run(daemon.run())
        except StartupError as exc:
            print(f"haproxyd: {exc}", file=sys.stderr)
            return 3


def cmd_reload(args: argparse.Namespace) -> int:
    """Send SIGHUP and report the outcome synchronously (HAProxy's master CLI does),
    reading it from the daemon's admin API."""
    from haproxyd.reload_client import reload_daemon

    return reload_daemon(
        config_path=args.config,
        pid_file=args.pid_file,
        timeout=args.timeout,
        client_cert=args.admin_cert,
        client_key=args.admin_key,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from haproxyd.heap import tune_gc
    from haproxyd.worker import worker_main

    _setup_logging(args.log_level)
    tune_gc()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(worker_main(args.fd, args.slot))


def cmd_version(args: argparse.Namespace) -> int:
    from haproxyd._build import dataplane_form

    print(f"haproxyd {__version__} (data plane: {dataplane_form()})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from haproxyd.demo import run_demo

    _setup_logging(args.log_level)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run_demo(port=args.port, duration=args.duration))


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# The commands `haproxyd --help` lists (`_worker` is started by the master, not by hand).
COMMANDS = ("run", "check", "reload", "version", "demo")


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """-c, -p and --log-level, accepted before the subcommand (`defaults`: the values
    when they are not given) and after it (SUPPRESS: given there, they win; not given,
    they leave what came before the subcommand alone)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-c", "--config", default=default(None), help="configuration file (YAML)")
    parser.add_argument(
        "-p",
        "--pid-file",
        default=default(None),
        help="pid file: written by the daemon (removed at exit), read by reload",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=default(None),
        help="stderr log level (run: info, demo: warning)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="haproxyd", description="L7 HTTP/1.1 reverse proxy and load balancer"
    )
    _global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")

    def command(name: str, **kwargs: str) -> argparse.ArgumentParser:
        # A parser added without `help` is left out of the command list.
        sub_parser = sub.add_parser(name, **kwargs)
        _global_options(sub_parser, defaults=False)
        return sub_parser

    command("run", help="run the daemon in the foreground (the default)")
    reload = command("reload", help="reload a running daemon and report the outcome")
    reload.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    reload.add_argument(
        "--admin-cert", help="client certificate (PEM) for an admin API with admin.tls.client_ca"
    )
    reload.add_argument("--admin-key", help="its private key (default: in --admin-cert)")
    worker = command("_worker")
    worker.add_argument("--fd", type=int, required=True)
    worker.add_argument("--slot", type=int, required=True)
    command("check", help="validate a configuration file and exit")
    command("version", help="print the version")
    demo = command("demo", help="start three local backends and balance across them")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (0 = any free port)")
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds (0 = never)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    if command in ("run", "check", "reload") and not args.config:
        parser.error(f"{command}: the following arguments are required: -c/--config")
    if args.log_level is None:
        args.log_level = "warning" if command == "demo" else "info"
    handlers = {
        "run": cmd_run,
        "check": cmd_check,
        "version": cmd_version,
        "demo": cmd_demo,
        "reload": cmd_reload,
        "_worker": cmd_worker,
    }
    try:
        return handlers[command](args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
