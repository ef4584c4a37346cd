"""`python -m brokerlab bench [--quick] [--json FILE]`: run the benchmark, print the tables, save JSON.
Exit code 1 when a step failed or a figure is not positive and finite."""
from __future__ import annotations

import os


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="the CI-size run (BROKERLAB_QUICK=1): under a minute")
    parser.add_argument("--json", metavar="FILE", help="also write every figure, ratio and the machine's limits here")


def main(args) -> int:
    if args.quick:
        os.environ["BROKERLAB_QUICK"] = "1"
    from ..health import require
    from .suite import plan, run

    require("redis", "rabbitmq", "kafka")
    steps = plan()

    def progress(index, steps, report):
        if index < len(steps):
            print(f"[{index + 1}/{len(steps)}] {steps[index].label} ...", flush=True)

    report = run(steps, progress=progress)
    print()
    print(report.text())
    if args.json:
        print(f"\nwrote {report.save(args.json)}")
    problems = report.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0
