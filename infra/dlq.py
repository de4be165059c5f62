"""`pdfrelay dlq list|replay`: the parking lot of webhook deliveries that gave up
(shared/webhooks/dead.py); with `--targets`, the result-destination deliveries that gave up
(shared/jobs/target_dlq.py: tasks parked in `pdfrelay.targets.dead`, and failed targets)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict

from shared.doors.table import DOORS
from shared.errors import PdfRelayError
from shared.jobs import target_dlq
from shared.runtime.context import open_context
from shared.settings import Settings
from shared.webhooks.dead import list_dead, replay_dead


def _cmd_list(args: argparse.Namespace) -> int:
    if args.targets:
        return _list_targets(args)
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


def _list_targets(args: argparse.Namespace) -> int:
    parked = asyncio.run(target_dlq.list_parked(Settings(), limit=args.limit))
    if args.json:
        print(json.dumps([asdict(x) for x in parked], indent=2))
        return 0
    for x in parked:
        print(f"{x.job_id or '-':32}  {x.tenant or '-':16}  {x.reason}")
    print(
        f"{len(parked)} parked target deliveries (a target that failed otherwise is in its "
        "job's record: `pdfrelay dlq replay --targets --job ID` sends it again)"
    )
    return 0


async def _replay_targets(settings: Settings, args: argparse.Namespace) -> int:
    assert settings.s3_endpoint is not None
    async with open_context(settings, settings.s3_endpoint, name="dlq", doors=DOORS) as ctx:
        return await target_dlq.replay(
            ctx, job_id=args.job, tenant=args.tenant, replay_all=args.all
        )


def _cmd_replay(args: argparse.Namespace) -> int:
    if args.targets:
        settings = Settings()
        if not settings.s3_endpoint:
            print("PDFRELAY_S3_ENDPOINT is required for `pdfrelay dlq replay --targets`")
            return 2
        try:
            count = asyncio.run(_replay_targets(settings, args))
        except PdfRelayError as exc:
            print(f"not replayed: {exc.message}")
            return 1
        print(f"queued {count} target deliveries again")
        return 0 if count or args.all else 1
    count = asyncio.run(replay_dead(Settings(), job_id=args.job, replay_all=args.all))
    print(f"replayed {count} webhook deliveries")
    return 0 if count or args.all else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq list` and `dlq replay` to the `pdfrelay` command."""
    dlq = sub.add_parser("dlq", help="dead webhook (or target) deliveries: list, replay")
    commands = dlq.add_subparsers(dest="dlq_command", required=True)
    targets_help = "result-destination deliveries (pdfrelay.targets.dead, failed targets)"
    listing = commands.add_parser("list", help="show the parked webhook deliveries")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--targets", action="store_true", help=targets_help)
    listing.set_defaults(func=_cmd_list)
    replay = commands.add_parser("replay", help="send parked deliveries again, attempts reset")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", help="only this job's deliveries")
    which.add_argument("--all", action="store_true", help="every parked delivery")
    replay.add_argument(
        "--targets",
        action="store_true",
        help=f"{targets_help}; with --job, a failed target is reopened and delivered again",
    )
    replay.add_argument("--tenant", default="default", help="the job's tenant (--targets --job)")
    replay.set_defaults(func=_cmd_replay)
