"""``poolkeeper console --dsn URL``: open a pool and serve its web console until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import PoolConfig, mask_dsn
from ..console import serve
from ..errors import ConnectError, PoolError
from ..pool import Pool
from .console_token import TOKEN_ENV, given_token, token_refused
from .failures import connect_failed
from .serving import serve_until_stopped

__all__ = ["add_arguments", "run"]

#: what ``poolkeeper --help`` says of this command
HELP = "serve a pool's web console (JSON API and /metrics too)"


def run(args: argparse.Namespace) -> int:
    """Open the pool, serve its console until Ctrl-C (or ``--seconds``), close both."""
    options: dict[str, Any] = {}
    try:
        config = PoolConfig.from_toml(args.config) if args.config else None
        if args.dsn:
            options["dsn"] = args.dsn
        if args.max_size is not None:
            options["max_size"] = args.max_size
        if args.name:
            options["name"] = args.name
        if config is None and "dsn" not in options:
            print("poolkeeper console: give --dsn URL or --config FILE", file=sys.stderr)
            return 2
        token = given_token(args.token)
        refused = token_refused("console", args.host, token)
        if refused:
            print(refused, file=sys.stderr)
            return 2
        pool = Pool(config=config, **options) if config is not None else Pool(**options)
    except ConnectError as exc:
        dsn = options.get("dsn") or (config.dsn if config is not None else None)
        print(connect_failed("console", exc, dsn), file=sys.stderr)
        return 2
    except (OSError, ValueError, PoolError) as exc:
        print(f"poolkeeper console: cannot open the pool: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            handle = serve([pool], host=args.host, port=args.port, token=token,
                           protect_reads=True if args.protect_reads else None)
        except ValueError as exc:
            print(f"poolkeeper console: {exc}", file=sys.stderr)
            return 2
        print(f"poolkeeper console for pool {pool.name!r} ({mask_dsn(pool.config.dsn or '')}) "
              f"at {handle.url}; Ctrl-C stops it", flush=True)
        try:
            serve_until_stopped(args.seconds)
        finally:
            handle.stop()
    finally:
        pool.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="database URL of the pool to serve")
    p.add_argument("--config", help="a TOML file with a [pool] table (--dsn overrides its dsn)")
    p.add_argument("--name", help="pool name shown in the console")
    p.add_argument("--max-size", type=int, default=None, help="pool max_size")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8187, help="port (default 8187; 0: a free one)")
    p.add_argument("--token", help=f"access token (better: ${TOKEN_ENV}, kept out of ps)")
    p.add_argument("--protect-reads", action="store_true",
                   help="require the token for reading pages on loopback too (on a machine "
                        "shared with other users)")
    p.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
