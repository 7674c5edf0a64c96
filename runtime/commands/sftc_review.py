"""`sftc review RUN`: a local web page where experts score, flag and correct a run's eval
answers (the tuned model's next to the base model's); `--export FILE` writes the
corrections as data rows instead."""

from __future__ import annotations

import ipaddress
import secrets
from typing import TYPE_CHECKING

from runtime.commands import ExitCode, say

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "review"
HELP = "a local web page to score, flag and correct a run's eval answers"
TAKES_SPEC = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    parser.add_argument("--port", type=int, default=8765, help="(default 8765; 0: any free port)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; any other needs --token)"
    )
    parser.add_argument("--token", default=None, help="a secret every request must carry (required off 127.0.0.1)")
    parser.add_argument("--reviewer", default=None, help="judge as this reviewer (default: the page asks)")
    parser.add_argument(
        "--blind", action="store_true", help="show the tuned and base answers as A/B in a random order per row"
    )
    parser.add_argument(
        "--export",
        metavar="FILE",
        default=None,
        help="write the corrections as JSON-lines data rows to FILE; no server",
    )
    parser.add_argument(
        "--export-pairs",
        metavar="FILE",
        default=None,
        help="write the judgements as preference pairs (prompt, chosen, rejected: TRL's DPO rows) to FILE; no server",
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _export(args: argparse.Namespace, console: Console) -> int:
    from runtime.review.corrections import export_corrections

    result = export_corrections(args.run_dir, args.export)
    for warning in result.warnings:
        say(console, "warning", warning)
    for refusal in result.refused:
        say(console, "error", f"not exported: {refusal}")
    rows = f"{result.written} corrected row{'s' * (result.written != 1)}"
    if result.refused:
        console.print(
            f"wrote {rows} to {result.path}; {len(result.refused)} row"
            f"{'s' * (len(result.refused) != 1)} refused (see above)",
            highlight=False,
        )
        return ExitCode.FAIL
    console.print(f"wrote {rows} to {result.path}", highlight=False)
    return ExitCode.OK


def _export_pairs(args: argparse.Namespace, console: Console) -> int:
    from runtime.review.preference_pairs import export_pairs

    result = export_pairs(args.run_dir, args.export_pairs)
    for warning in result.warnings:
        say(console, "warning", warning)
    pairs = f"{result.written} preference pair{'s' * (result.written != 1)}"
    console.print(
        f"wrote {pairs} to {result.path}: {result.by_correction} a correction over the tuned answer, "
        f"{result.by_scores} the higher-scored of the tuned and base answers; no pair from {result.ties} "
        f"tie{'s' * (result.ties != 1)}, {result.unchanged} correction{'s' * (result.unchanged != 1)} equal to "
        f"the answer, {result.undecided} row{'s' * (result.undecided != 1)} with neither a correction "
        "nor both answers scored",
        highlight=False,
    )
    return ExitCode.OK


def main(args: argparse.Namespace, console: Console) -> int:
    """Serve the review page of `args.run_dir` until Ctrl-C, or export its corrections."""
    from runtime.review.display import odd_character
    from runtime.review.rows import load_rows
    from runtime.review.store import valid_reviewer

    if args.reviewer is not None and valid_reviewer(args.reviewer):
        odd = args.reviewer.strip() and odd_character(args.reviewer)
        say(console, "error", f"--reviewer: {valid_reviewer(args.reviewer)}{f' (it holds {odd})' if odd else ''}")
        return ExitCode.USAGE
    if args.export is not None and args.export_pairs is not None:
        say(console, "error", "--export and --export-pairs: one export at a time")
        return ExitCode.USAGE
    if args.export is not None:
        return _export(args, console)
    if args.export_pairs is not None:
        return _export_pairs(args, console)
    rows = load_rows(args.run_dir)  # a ReviewError (an SftcError) is shown as one line, exit 1
    if not _loopback(args.host) and not args.token:
        say(
            console,
            "error",
            f"--host {args.host} would let anyone who can reach this machine read the run's "
            f"data and write reviews; pass --token T (every request must then carry it), "
            f"or keep the default --host 127.0.0.1",
        )
        return ExitCode.USAGE
    if args.token is not None and len(args.token) < 16:
        say(console, "error", f"--token: use at least 16 characters (for example: {secrets.token_urlsafe(24)})")
        return ExitCode.USAGE
    if not 0 <= args.port <= 65535:
        say(console, "error", f"--port {args.port}: a port is 0-65535 (0: any free port)")
        return ExitCode.USAGE

    from runtime.platform.library_logs import route_library_logs
    from runtime.review.app import create_app, serve

    route_library_logs(rows.run_dir / "sftc.log")  # the server's unexpected failures are logged with the run
    app = create_app(rows, reviewer=args.reviewer, blind=args.blind, token=args.token, bound_host=args.host)

    def ready(server) -> None:
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{server.effective_port}/"
        if args.token:
            url += f"?token={args.token}"
        base = "no baseline answers" if rows.base_samples is None else f"baseline: {rows.base_kind or 'base'}"
        print(f"review: {url}", flush=True)
        console.print(
            f"{len(rows.rows)} rows of {args.run_dir} ({base}{', blind' if args.blind else ''}); "
            f"judgements go to {rows.run_dir / 'reviews.sqlite'}; Ctrl-C stops",
            highlight=False,
            soft_wrap=True,
        )

    try:
        serve(app, args.host, args.port, ready=ready)  # returns on Ctrl-C (waitress stops its threads)
    except KeyboardInterrupt:  # Ctrl-C before waitress's loop started
        pass
    except OSError as error:  # the port is taken, the address is not this machine's
        say(console, "error", f"cannot listen on {args.host}:{args.port}: {error}")
        return ExitCode.FAIL
    console.print("stopped; every saved judgement is in reviews.sqlite", highlight=False)
    return ExitCode.OK
