"""The ``convloc`` command line. Subcommands live in :mod:`convloc.commands`, one module per area."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys


def _bench_families() -> list[str]:
    import convloc.benchmarks as b

    return sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules(b.__path__) if m.name.startswith("bench_")
    )


def _cmd_info(args: argparse.Namespace) -> int:
    import convloc

    print(json.dumps(convloc.info(), indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    families = _bench_families() if args.family == "all" else [args.family]
    for family in families:
        importlib.import_module(f"convloc.benchmarks.bench_{family}").run(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    import convloc
    import convloc.commands
    from convloc.benchmarks import harness

    parser = argparse.ArgumentParser(prog="convloc", description=convloc.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"convloc {convloc.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="what was compiled and what this machine can use")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="microbenchmarks against the peers (torchvision, pydensecrf, ...)")
    p.add_argument("family", choices=_bench_families() + ["all"])
    harness.add_common_args(p)
    p.set_defaults(func=_cmd_bench)

    modules = [
        importlib.import_module(f"convloc.commands.{m.name}")
        for m in sorted(pkgutil.iter_modules(convloc.commands.__path__), key=lambda m: m.name)
    ]
    for hook, command, help_text in (
        ("register_train", "train", "train a model (see `convloc train -h`)"),
        ("register_data", "data", "make or inspect datasets"),
    ):
        owners = [m for m in modules if hasattr(m, hook)]
        if owners:
            group = sub.add_parser(command, help=help_text).add_subparsers(
                dest="kind", required=True, metavar="KIND"
            )
            for m in owners:
                getattr(m, hook)(group)
    for m in modules:
        if hasattr(m, "register"):
            m.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = args.func(args)
    if "torch.distributed" in sys.modules:  # a command may have joined a torchrun process group
        from convloc.models.common import close_distributed

        close_distributed()
    return code


if __name__ == "__main__":
    sys.exit(main())
