"""The ``convloc`` command line. Subcommands live in :mod:`convloc.commands`, one module per area."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from typing import NoReturn

from convloc.commands import UsageError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, ``(default: X)``, unless it has none (None, an
    unset flag) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The parser of ``convloc`` and of each of its subcommands (argparse makes subparsers of the
    parent's class): defaults shown in the help, and errors raised as :class:`UsageError`, which
    :func:`main` also uses for the errors a command finds."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        self.set_defaults(parser=self)  # the deepest subparser's default wins: the command's own

    def error(self, message: str) -> NoReturn:
        """Prints the usage and ``prog: error: message`` as argparse does, then exits with status 2
        (a :class:`UsageError` whose ``str()`` is ``message``)."""
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


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

    parser = Parser(prog="convloc", description=convloc.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"convloc {convloc.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "info",
        help="what was compiled and what this machine can use",
        description="Prints, as JSON, the version, the compiler, the SIMD levels and CUDA "
        "architectures compiled in, and the threads and CUDA devices this machine gives them.",
    )
    p.set_defaults(func=_cmd_info)

    families = _bench_families()
    p = sub.add_parser(
        "bench",
        help="microbenchmarks against the peers (torchvision, pydensecrf, ...)",
        description="Times convloc's kernels against the libraries they stand in for, interleaved "
        "in one process, and prints the median times and their ratio.",
    )
    p.add_argument(
        "family", choices=families + ["all"], help=f"kernels to time: {', '.join(families)}, or all of them"
    )
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
    """Runs ``convloc ARGV``; returns the exit status. Bad arguments raise :class:`UsageError`
    (a ``SystemExit`` with status 2) after printing the usage and the error; a file that cannot be
    read or written prints one line and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UsageError as e:
        args.parser.error(str(e))
    except OSError as e:  # a file that cannot be read or written: one line, no traceback
        print(f"{args.parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if "torch.distributed" in sys.modules:  # a command may have joined a torchrun process group
        from convloc.models.common import close_distributed

        close_distributed()
    return code


if __name__ == "__main__":
    sys.exit(main())
