"""The ``mlops`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mlops_assets.spec import load_specs
from resources.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description="Operate the models defined by the pipeline specs.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the whole lifecycle of a model through the Dagster CLI")
    demo_parser.add_argument("--model", help="spec name (default: the first spec)")
    demo_parser.add_argument("--parallel", type=int, default=2, help="concurrent dagster processes (default 2)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    specs = load_specs(settings.pipelines)
    if args.command == "demo":
        from mlops_assets.demo import demo

        spec = next((s for s in specs if s.name == args.model), None) if args.model else specs[0]
        if spec is None:
            parser.error(f"--model: no spec named {args.model!r} (have: {', '.join(s.name for s in specs)})")
        return demo(spec, settings, parallel=args.parallel)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
