"""``voxpipe records ...``: API tokens, legal hold, retention purge, key rotation, audit check."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from voxpipe.records.tokens import ROLES, Principal, TokenError

__all__ = ["add_records_parser", "run_records"]


def add_records_parser(sub: Any) -> None:
    """Register ``voxpipe records`` and its subcommands."""
    p = sub.add_parser("records", help="call records: API tokens, retention, keys, audit log")
    rs = p.add_subparsers(dest="records_command", required=True)
    token = rs.add_parser("token", help="records API bearer tokens")
    ts = token.add_subparsers(dest="token_command", required=True)
    create = ts.add_parser("create", help="create a token (printed once, as the last line)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="who or what the token is for")
    revoke = ts.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    rs.add_parser("purge", help="delete records past retention (legal holds kept), audited")
    hold = rs.add_parser("hold", help="put a call under legal hold (exempt from purge/erasure)")
    hold.add_argument("call_id")
    hold.add_argument("--release", action="store_true", help="lift the hold instead")
    rs.add_parser(
        "rotate-key",
        help="re-wrap every data key under RECORDS_KEK (old keys in RECORDS_KEK_PREVIOUS)",
    )
    rs.add_parser("verify-audit", help="check the audit log's hash chain (exit 1 if broken)")


def run_records(args: argparse.Namespace, settings: Any) -> int:
    """Run one ``voxpipe records`` subcommand; the exit status."""
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Any) -> int:
    from voxpipe.records.runtime import RecordsBackend
    from voxpipe.state import make_database

    backend = RecordsBackend.build(settings, make_database(settings))
    who = Principal(f"cli:{_user()}", "admin")
    try:
        await backend.db.start()
        return await _dispatch(args, backend, who)
    except TokenError as exc:
        print(f"voxpipe: error: {exc}", file=sys.stderr)
        return 2
    finally:
        await backend.db.close()


async def _dispatch(args: argparse.Namespace, backend: Any, who: Principal) -> int:
    cmd = args.records_command
    if cmd == "token":
        if args.token_command == "create":
            token = await backend.tokens.create(args.name, args.role)
            await backend.audit.append(
                actor=who.name,
                role=who.role,
                action="token.create",
                outcome="ok",
                detail={"name": args.name, "token_role": args.role},
            )
            print(f"token {args.name!r} (role {args.role}) created; it is shown only once:")
            print(token)
            return 0
        await backend.tokens.revoke(args.name)
        await backend.audit.append(
            actor=who.name,
            role=who.role,
            action="token.revoke",
            outcome="ok",
            detail={"name": args.name},
        )
        print(f"token {args.name!r} revoked")
        return 0
    if cmd == "purge":
        deleted = await backend.calls.purge(who)
        print(f"purged {len(deleted)} call record(s) past retention")
        for call_id in deleted:
            print(f"  {call_id}")
        return 0
    if cmd == "hold":
        found = await backend.calls.set_hold(args.call_id, not args.release, who)
        if not found:
            print(f"voxpipe: error: no call {args.call_id!r}", file=sys.stderr)
            return 1
        print(f"call {args.call_id} legal hold {'lifted' if args.release else 'set'}")
        return 0
    if cmd == "rotate-key":
        try:
            n = await backend.calls.rotate(who)
        except ValueError as exc:
            print(f"voxpipe: error: {exc}", file=sys.stderr)
            return 2
        kek = backend.calls.cipher.ring.key_id
        print(f"re-wrapped the data keys of {n} call record(s) under KEK {kek}")
        return 0
    verdict = await backend.audit.verify()
    await backend.audit.append(
        actor=who.name,
        role=who.role,
        action="audit.verify",
        outcome="ok" if verdict.ok else "broken",
        detail={"rows": verdict.rows, "bad_row": verdict.bad_seq},
    )
    if not verdict.ok:
        print(f"audit log BROKEN at row {verdict.bad_seq}: {verdict.reason}")
        return 1
    print(f"audit log intact: {verdict.rows} row(s), head hash {verdict.head}")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
