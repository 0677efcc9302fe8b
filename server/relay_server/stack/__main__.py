"""``python -m relay_server.stack up|up-cluster|down|status`` (behind ``make up`` / ``make up-cluster`` / ``make down``)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from relay_server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay_server.stack", description="Relay's local stack.")
    parser.add_argument("command", choices=["up", "up-cluster", "down", "status"])
    args = parser.parse_args(argv)
    # Imported here so `--help` stays fast.
    from relay_server.stack import up as stack

    settings = Settings.from_env()
    try:
        if args.command == "up":
            stack.up(settings)
        elif args.command == "up-cluster":
            from relay_server.stack.cluster_up import up_cluster

            up_cluster(settings)
        elif args.command == "down":
            from relay_server.stack.cluster_up import down_cluster

            down_cluster(settings)  # `make up-cluster`'s pieces, if it ran (nothing otherwise)
            stack.down(settings)
        else:
            return 0 if stack.status(settings) else 3
    except (OSError, RuntimeError, TimeoutError, ValueError, psycopg.Error) as exc:
        # Our own failures carry a readable message (and a log tail); no traceback.
        print(f"relay stack {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
