"""`segment-engine` command line: worker, topics, segments, publish, tail, and the `run` demo."""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import orjson

from engine.settings import Settings, load_settings


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from engine.admin import ensure_topics
    from engine.app import Engine

    require_broker(settings)
    ensure_topics(settings)
    engine = Engine(settings)
    worker = Worker(engine.app, loglevel=settings.log_level, quiet=True)
    worker.spinner = None  # its cursor escapes would mangle `run`'s event output
    worker.execute_from_commandline()
    return 0


def cmd_topics_create(settings: Settings, args: argparse.Namespace) -> int:
    from engine.admin import ensure_topics

    require_broker(settings)
    created = ensure_topics(settings)
    print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
    return 0


def cmd_segments_apply(settings: Settings, args: argparse.Namespace) -> int:
    from engine.client import Publisher

    segments = load_segment_file(Path(args.file), settings)
    require_broker(settings)
    publisher = Publisher(settings)
    for segment in segments:
        workspace = segment.pop("workspace")
        data = publisher.define_segment(workspace, segment)
        print(f"defined {workspace}/{data['object_type']}/{data['id']} version {data['version']}")
    publisher.close()
    return 0


def cmd_segments_import(settings: Settings, args: argparse.Namespace) -> int:
    """Import record ids from a CSV file (one id per line, or a `record_id` column) into a static segment."""
    from engine.client import Publisher

    require_broker(settings)
    ids = read_record_ids(Path(args.file))
    publisher = Publisher(settings)
    version = None
    if args.name:
        data = publisher.define_segment(args.workspace, {"id": args.segment, "object_type": args.object_type,
                                                         "name": args.name, "kind": "static"})
        version = data["version"]
        print(f"defined static segment {args.workspace}/{args.object_type}/{args.segment} version {version}")
    total = len(ids)
    for done in range(0, total, 50_000):
        publisher.import_members(args.workspace, args.object_type, args.segment, ids[done : done + 50_000],
                                 add=not args.remove, segment_version=version)
        publisher.flush()
        print(f"{'removed' if args.remove else 'imported'} {min(done + 50_000, total)}/{total} ids", flush=True)
    publisher.close()
    return 0


def read_record_ids(path: Path) -> list[str]:
    import csv

    with open(path, newline="") as file:
        rows = [row for row in csv.reader(file) if row and row[0].strip()]
    if not rows:
        return []
    column = rows[0].index("record_id") if "record_id" in rows[0] else 0
    body = rows[1:] if "record_id" in rows[0] else rows
    return [row[column].strip() for row in body]


def cmd_segments_remove(settings: Settings, args: argparse.Namespace) -> int:
    from engine.client import Publisher

    require_broker(settings)
    publisher = Publisher(settings)
    publisher.remove_segment(args.workspace, args.object_type, args.segment_id)
    publisher.close()
    print(f"removed {args.workspace}/{args.object_type}/{args.segment_id}")
    return 0


def cmd_assignment_set(settings: Settings, args: argparse.Namespace) -> int:
    """Check a rules document here (segments are checked by the HTTP API, which knows them) and publish it."""
    from engine.assignment import InvalidAssignment, parse_assignment
    from engine.client import Publisher

    doc = orjson.loads(Path(args.file).read_bytes())
    try:
        parse_assignment(doc, args.workspace, 1)
    except InvalidAssignment as exc:
        sys.exit("segment-engine assignment set: " + "; ".join(f"{p.path}: {p.message} ({p.code})" for p in exc.problems))
    require_broker(settings)
    publisher = Publisher(settings)
    version = publisher.set_assignment_rules(args.workspace, doc)
    publisher.close()
    print(f"assignment rules of {args.workspace}: {len(doc.get('rules', []))} rule(s), version {version}")
    return 0


def cmd_assignment_show(settings: Settings, args: argparse.Namespace) -> int:
    from engine.client import read_assignment_rules

    require_broker(settings)
    print(orjson.dumps(read_assignment_rules(settings, args.workspace), option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_conversation(settings: Settings, args: argparse.Namespace) -> int:
    import uuid

    from engine.client import Publisher

    require_broker(settings)
    publisher = Publisher(settings)
    conversation_id = args.id or f"conv-{uuid.uuid4().hex[:12]}"
    publisher.publish_conversation(args.workspace, conversation_id, args.contact)
    publisher.close()
    print(f"conversation {conversation_id} opened for contact {args.contact}")
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from engine.client import Publisher
    from engine.sample_data import contact_changes

    require_broker(settings)
    if args.sample:
        changes: list[dict[str, Any]] = list(contact_changes(random.Random(args.seed), args.sample, args.records))
    else:
        source = sys.stdin.buffer if args.file in (None, "-") else open(args.file, "rb")
        changes = [orjson.loads(line) for line in source if line.strip()]
    publisher = Publisher(settings)
    if args.batch > 1:
        messages = publisher.publish_batches(args.workspace, changes, args.batch)
    else:
        for change in changes:
            publisher.publish_change(args.workspace, change)
        messages = len(changes)
    publisher.close()
    print(f"published {len(changes)} change(s) in {messages} message(s)")
    return 0


def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    from engine.client import Publisher

    require_broker(settings)
    source = sys.stdin.buffer if args.file in (None, "-") else open(args.file, "rb")
    events = [orjson.loads(line) for line in source if line.strip()]
    publisher = Publisher(settings)
    messages = publisher.publish_events(args.workspace, events, max(1, args.batch))
    publisher.close()
    print(f"published {len(events)} event(s) in {messages} message(s)")
    return 0


def cmd_clock_set(settings: Settings, args: argparse.Namespace) -> int:
    from engine.client import Publisher
    from engine.rules import parse_datetime_ms

    require_broker(settings)
    try:
        now = parse_datetime_ms(int(args.when) if args.when.isdigit() else args.when)
    except ValueError as exc:
        sys.exit(f"segment-engine clock set: {exc}")
    publisher = Publisher(settings)
    publisher.set_clock(now)
    publisher.close()
    print(f"clock set to {now} ms on {settings.partitions} partition(s)"
          + ("" if settings.clock == "manual" else " (workers on the system clock only move forward with it)"))
    return 0


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    import topics
    from engine.tail import TailError, parse_seeks, tail

    try:
        seeks = parse_seeks(args.seek or ())
    except ValueError as exc:
        sys.exit(f"segment-engine tail: {exc}")
    require_broker(settings)
    try:
        tail(settings, follow=args.follow, from_beginning=args.from_beginning, as_json=args.json,
             segment=args.segment, group=args.group, seeks=seeks,
             spec=topics.CONVERSATION_ASSIGNMENTS if args.assignments else topics.SEGMENT_EVENTS)
    except TailError as exc:
        sys.exit(f"segment-engine tail: {exc}")
    return 0


def not_ready_because(health: dict[str, Any]) -> str:
    """What /health says keeps a worker from being ready, as ` (reason, ...)`; empty when it names nothing."""
    reasons = []
    if health.get("registry_loaded") is False:
        reasons.append("loading segment definitions")
    if health.get("recovering"):
        reasons.append("recovering tables")
    if health.get("repairing_partitions"):
        reasons.append(f"repairing {health['repairing_partitions']}")
    return f" ({', '.join(reasons)})" if reasons else ""


def by_partition(counts: dict[str, int]) -> str:
    """`p0:12 p3:4`: the partitions of a /health figure that have some left."""
    return " ".join(f"p{p}:{n}" for p, n in counts.items() if n)


def cmd_progress(settings: Settings, args: argparse.Namespace) -> int:
    """Backfills (segment created, edited, recalculated) and consumer lag of every worker, from /health;
    with --wait, until every answer is complete and current: every worker ready, every partition held by
    exactly one of them, no backfill running and nothing left to apply."""
    import time
    import urllib.error
    import urllib.request

    args.url = args.url or f"http://127.0.0.1:{settings.web_port}"

    def fetch(url: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as response:
                return orjson.loads(response.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:  # 503: not ready, same body
            return orjson.loads(exc.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    deadline = time.monotonic() + args.timeout
    while True:
        first = fetch(args.url)
        urls = sorted((first or {}).get("workers") or {}) or [args.url]
        done = first is not None
        covered: list[int] = []  # partitions the ready workers hold: every one exactly once when done
        for url in urls:
            health = first if url.rstrip("/") == args.url.rstrip("/") else fetch(url)
            if health is None:
                print(f"{time.strftime('%H:%M:%S')}  {url}  unreachable", flush=True)
                done = False
                continue
            backfill = sum(health.get("backfill_pending", {}).values())
            lag = sum(health.get("lag", {}).values())
            detail = by_partition(health.get("backfill_pending", {}))
            unowned = health.get("unowned_partitions") or []
            lagging = by_partition(health.get("lag", {}))
            print(f"{time.strftime('%H:%M:%S')}  {url}  {'ready' if health.get('ready') else 'NOT READY' + not_ready_because(health)}  "
                  f"partitions={health.get('partitions')}  backfill pending={backfill}{' (' + detail + ')' if detail else ''}"
                  f"  lag={lag}{' (' + lagging + ')' if lagging else ''}{f'  no live owner: {unowned}' if unowned else ''}",
                  flush=True)
            done = done and bool(health.get("ready")) and backfill == 0 and lag == 0
            covered += health.get("partitions") or []
        if first is not None and sorted(covered) != list(range(first.get("partition_count", len(covered)))):
            done = False  # a partition nobody holds (a dead member's), or one two workers both claim
        if not args.wait or done:
            return 0
        if time.monotonic() > deadline:
            print(f"segment-engine progress: not done after {args.timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(args.interval)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(settings, duration=args.duration, rate=args.rate)


def require_broker(settings: Settings) -> None:
    if not settings.broker:
        sys.exit("segment-engine: set SEGMENT_ENGINE_BROKER=host:port (or use `segment-engine run`)")


def load_segment_file(path: Path, settings: Settings) -> list[dict[str, Any]]:
    """Read a JSON list of segments and validate each rule here, so a bad rule fails at the prompt."""
    from engine.rules import InvalidRule, load_rule
    from engine.workspaces import load_workspaces

    workspaces = load_workspaces(settings.workspaces_file)
    segments: list[dict[str, Any]] = orjson.loads(path.read_bytes())
    for segment in segments:
        name = f"{segment.get('workspace')}/{segment.get('object_type')}/{segment.get('id')}"
        catalog = workspaces.catalog(segment.get("workspace", ""), segment.get("object_type", ""))
        if catalog is None:
            sys.exit(f"segment {name}: unknown workspace or object type")
        try:
            load_rule(segment["rule"], catalog)
        except InvalidRule as exc:
            sys.exit(f"segment {name}: {exc}")
    return segments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segment-engine",
        description="Streaming segment membership engine. Settings come from SEGMENT_ENGINE_* variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a worker: consume record changes, keep membership, emit events")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("topics", help="manage the engine's Kafka topics")
    topics_sub = p.add_subparsers(dest="topics_command", required=True)
    p = topics_sub.add_parser("create", help="create every declared topic that does not exist (idempotent)")
    p.set_defaults(func=cmd_topics_create)

    p = sub.add_parser("segments", help="define or remove segments")
    seg_sub = p.add_subparsers(dest="segments_command", required=True)
    p = seg_sub.add_parser("apply", help="validate and publish the segments of a JSON file (a list of definitions)")
    p.add_argument("file")
    p.set_defaults(func=cmd_segments_apply)
    p = seg_sub.add_parser("import", help="import record ids (CSV) into a static segment, or create one with --name")
    p.add_argument("file", help="CSV: one record id per line, or a file with a record_id column")
    p.add_argument("--workspace", required=True)
    p.add_argument("--object-type", default="contact")
    p.add_argument("--segment", required=True, help="segment id")
    p.add_argument("--name", help="create a new static segment with this name first")
    p.add_argument("--remove", action="store_true", help="remove the listed records instead of adding them")
    p.set_defaults(func=cmd_segments_import)
    p = seg_sub.add_parser("remove", help="delete a segment (records are never touched)")
    p.add_argument("workspace")
    p.add_argument("object_type")
    p.add_argument("segment_id")
    p.set_defaults(func=cmd_segments_remove)

    p = sub.add_parser("assignment", help="chat assignment rules: segment → team member or group, first match wins")
    assign_sub = p.add_subparsers(dest="assignment_command", required=True)
    p = assign_sub.add_parser("set", help='replace a workspace\'s rules with a JSON file {"rules": [...], "groups": {...}}')
    p.add_argument("file")
    p.add_argument("--workspace", required=True)
    p.set_defaults(func=cmd_assignment_set)
    p = assign_sub.add_parser("show", help="print a workspace's current rules")
    p.add_argument("--workspace", required=True)
    p.set_defaults(func=cmd_assignment_show)

    p = sub.add_parser("conversation", help="publish a conversation.created for a contact (what a chat system sends)")
    p.add_argument("contact", help="contact id")
    p.add_argument("--workspace", default="demo")
    p.add_argument("--id", help="conversation id (default: a new random one)")
    p.set_defaults(func=cmd_conversation)

    p = sub.add_parser("publish", help="publish record changes (NDJSON file or stdin, or --sample N random contacts)")
    p.add_argument("file", nargs="?", help="NDJSON of changes {op, object_type, id, version, fields}; - for stdin")
    p.add_argument("--workspace", default="demo")
    p.add_argument("--batch", type=int, default=1, help="changes per message (grouped by partition); 1 = single-change messages")
    p.add_argument("--sample", type=int, default=0, help="publish N random contact changes instead of a file")
    p.add_argument("--records", type=int, default=500, help="distinct contacts for --sample")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("events", help="publish behavioural events (NDJSON {id, object_type, record_id, name, at, properties})")
    p.add_argument("file", nargs="?", help="NDJSON file; - or nothing for stdin")
    p.add_argument("--workspace", default="demo")
    p.add_argument("--batch", type=int, default=1, help="events per message (grouped by partition)")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("clock", help="engine time (for SEGMENT_ENGINE_CLOCK=manual)")
    clock_sub = p.add_subparsers(dest="clock_command", required=True)
    p = clock_sub.add_parser("set", help="move every partition's time to WHEN and run what is due")
    p.add_argument("when", help="ISO-8601 (naive = UTC) or epoch milliseconds")
    p.set_defaults(func=cmd_clock_set)

    p = sub.add_parser("tail", help="print segment entered/exited/deleted events (the reference subscriber)",
                       description="Print segment events. Text lines start with p<partition>@<offset>. Events are "
                                   "deduplicated by id; how many were skipped is reported on stderr at exit.")
    p.add_argument("--follow", action="store_true", help="keep waiting for new events (else stop after 3 s without any)")
    p.add_argument("--from-beginning", action="store_true",
                   help="a partition without a committed group offset starts at the oldest retained event "
                        "(default: at the end, only new events)")
    p.add_argument("--group", metavar="NAME",
                   help="consumer group: resume after the last event this group printed; offsets are committed "
                        "after each printed batch")
    p.add_argument("--seek", action="append", metavar="PARTITION:OFFSET",
                   help="start this partition at this offset (repeatable); with --group, the group moves there")
    p.add_argument("--segment", action="append", metavar="ID", help="only events of this segment id (repeatable)")
    p.add_argument("--json", action="store_true", help="print the JSON envelopes unchanged, one per line")
    p.add_argument("--assignments", action="store_true",
                   help="follow chat assignment decisions (conversation-assignments) instead of segment events; "
                        "--segment then keeps decisions made by rules on those segments")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("progress", help="backfill progress and consumer lag of every worker (from their /health)")
    p.add_argument("--url", default=None, help="any worker's HTTP address (default http://127.0.0.1:$SEGMENT_ENGINE_WEB_PORT); "
                                               "the others are found through it")
    p.add_argument("--wait", action="store_true", help="repeat until every worker is ready, idle and caught up")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two reports with --wait")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up (exit 1) after this many seconds with --wait")
    p.set_defaults(func=cmd_progress)

    p = sub.add_parser("run", help="demo: embedded broker, a worker, sample segments and changes, events printed")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0 = until Ctrl-C)")
    p.add_argument("--rate", type=float, default=20, help="sample changes per second")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(load_settings(), args) or 0)


if __name__ == "__main__":
    sys.exit(main())
