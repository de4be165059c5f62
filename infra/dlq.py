"""`pdfrelay dlq list|replay`: the parking lot of webhook deliveries that gave up
(shared/webhooks/dead.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict

from shared.settings import Settings
from shared.webhooks.dead import list_dead, replay_dead


def _cmd_list(args: argparse.Namespace) -> int:
    letters = asyncio.run(list_dead(Settings(), limit=args.limit))
    if args.json:
        print(json.dumps([asdict(x) for x in letters], indent=2))
        return 0
    if not letters:
        print("no dead webhook deliveries")
        return 0
    print(f"{'JOB':32}  {'EVENT':13}  {'ATTEMPTS':>8}  {'REASON':9}  URL / LAST ERROR")
    for x in letters:
        print(
            f"{x.job_id or '-':32}  {x.event_type or '-':13}  {x.attempts:>8}  "
            f"{x.reason or '-':9}  {x.url or '-'}"
        )
        if x.last_error:
            print(f"{'':70}{x.last_error}")
    print(f"{len(letters)} dead webhook deliveries")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    count = asyncio.run(replay_dead(Settings(), job_id=args.job, replay_all=args.all))
    print(f"replayed {count} webhook deliveries")
    return 0 if count or args.all else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq list` and `dlq replay` to the `pdfrelay` command."""
    dlq = sub.add_parser("dlq", help="dead webhook deliveries: list, replay")
    commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = commands.add_parser("list", help="show the parked webhook deliveries")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=1000)
    listing.set_defaults(func=_cmd_list)
    replay = commands.add_parser("replay", help="send parked deliveries again, attempts reset")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", help="only this job's deliveries")
    which.add_argument("--all", action="store_true", help="every parked delivery")
    replay.set_defaults(func=_cmd_replay)
