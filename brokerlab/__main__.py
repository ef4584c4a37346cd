"""Command line: python -m brokerlab {lab,test,setup,stack,tool,exercises,claims}.

Runs from a fresh clone with the system's python3: every command but `setup`
re-runs itself inside the course environment (.venv), creating it if needed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import bootstrap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m brokerlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create .venv and install the pinned packages")
    lab = sub.add_parser("lab", help="set up, start the broker stack and open JupyterLab on notebook 00")
    lab.add_argument("--no-browser", action="store_true")
    test = sub.add_parser("test", help="run the whole test suite (unit tests, every notebook twice, lab solutions)")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments passed to pytest")
    stack = sub.add_parser("stack", help="manage the broker stack")
    stack.add_argument("action", choices=["up", "down", "status", "logs", "reset"])
    stack.add_argument("broker", nargs="?", choices=["redis", "rabbitmq", "kafka"], help="(logs) one broker")
    stack.add_argument("-n", "--lines", type=int, default=40, help="(logs) lines per log")
    tool = sub.add_parser("tool", help="run a broker's own CLI against the stack, e.g. `tool redis-cli ping`")
    tool.add_argument("name", nargs="?", help="redis-cli, rabbitmqctl, rabbitmq-diagnostics, kafka-topics, ...")
    tool.add_argument("tool_args", nargs=argparse.REMAINDER, help="arguments passed to the tool")
    from .bench.cli import add_arguments as add_bench_arguments  # the performance lesson's benchmark (issue 14)

    add_bench_arguments(sub.add_parser("bench", help="measure every broker here, next to its own benchmark tool"))
    exercises = sub.add_parser("exercises", help="generate lab exercise notebooks from their solutions")
    exercises.add_argument("--check", action="store_true", help="only report stale exercises (exit 1)")
    # `site` (branch views): the executed course as static HTML pages
    site = sub.add_parser("site", help="execute every notebook (quick mode) and write a static HTML course site")
    site.add_argument("--out", default=None, help="output folder (default: build/site)")
    site.add_argument("--jobs", type=int, default=2, help="notebooks executed at a time (default 2)")
    site.add_argument("notebooks", nargs="*", help="only these notebooks (default: every lesson and lab solution)")
    # `claims` (issue 16): the claims ledger, checked against the notebooks and rendered into README.md
    claims = sub.add_parser("claims", help="check the claims ledger and regenerate its table in README.md")
    claims.add_argument("--check", action="store_true", help="only report problems and a stale README (exit 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "setup":
        bootstrap.ensure_venv()
        print(f"brokerlab: course environment ready in {bootstrap.VENV}")
        return 0
    if not bootstrap.in_course_env():
        bootstrap.reexec_in_venv(argv)  # does not return
    from .errors import StackError

    try:
        return run(args)
    except StackError as exc:
        print(f"brokerlab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run(args) -> int:
    from . import stack

    if args.command == "stack":
        if args.action == "up":
            stack.up()
        elif args.action == "down":
            stack.down()
        elif args.action == "reset":
            stack.reset()
        elif args.action == "logs":
            stack.logs(broker=args.broker, lines=args.lines)
        else:
            return 0 if stack.print_status() else 3
        return 0
    if args.command == "tool":
        from .stack import tools

        if not args.name:
            print("Tools (the stack's addresses are filled in):\n  " + "\n  ".join(tools.TOOLS))
            return 0
        return tools.run(args.name, args.tool_args)
    if args.command == "lab":
        return lab(args)
    if args.command == "test":
        from .testing import run_test_suite

        return run_test_suite(args.pytest_args)
    if args.command == "site":
        from .site import DEFAULT_OUT, build_site

        from pathlib import Path

        chosen = [Path(p).resolve() for p in args.notebooks] or None
        return build_site(out=args.out or DEFAULT_OUT, jobs=args.jobs, notebooks=chosen)
    if args.command == "bench":
        from .bench.cli import main as bench_main

        return bench_main(args)
    if args.command == "exercises":
        from .labs.build import build_all

        stale = build_all(check_only=args.check)
        return 1 if (args.check and stale) else 0
    if args.command == "claims":
        return claims_command(args)
    return 2


def claims_command(args) -> int:
    from . import claims

    problems = claims.problems()
    for problem in problems:
        print(f"brokerlab claims: {problem}", file=sys.stderr)
    stale = claims.update_readme(check_only=args.check)
    if stale:
        print("brokerlab claims: README.md's ledger section " + ("is stale" if args.check else "regenerated"))
    return 1 if problems or (args.check and stale) else 0


def lab(args) -> int:
    from . import stack
    from .stack.paths import REPO_ROOT

    stack.up()
    command = [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1",
               f"--ServerApp.root_dir={REPO_ROOT}", "notebooks/00_orientation.ipynb"]
    if args.no_browser:
        command.append("--no-browser")
    if os.geteuid() == 0:
        command.append("--allow-root")
    print("Starting JupyterLab (Ctrl-C to stop it; the brokers keep running until `make down`).", flush=True)
    return subprocess.call(command, cwd=REPO_ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
