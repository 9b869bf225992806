"""Subcommands of the ``convloc`` command line, one module per area.

A module here may define any of:
  ``register(sub)``        add top-level commands (``sub`` is the argparse subparsers object);
  ``register_train(sub)``  add model kinds under ``convloc train`` (``convloc train fcn ...``);
  ``register_data(sub)``   add dataset commands under ``convloc data`` (``convloc data make-shapes ...``).
Each parser sets ``func`` (called with the parsed args, returns an exit code).

Bad arguments end a command as argparse ends on its own errors: the usage and
``<prog>: error: <message>`` on stderr, exit status 2. The argparse types below check a value on
its own; a command that finds a fault only when it reads the files (a split the dataset lacks, a
checkpoint of another kind) raises :class:`UsageError`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from typing import Callable


class UsageError(SystemExit):
    """A bad command-line argument: exit status 2, ``str()`` the message, which starts with the
    argument at fault (``--split: no split 'tst' in ...``). ``convloc`` prints it with the usage
    of the command, as argparse prints its own errors."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def real(interval: str) -> Callable[[str], float]:
    """An argparse type: a number in ``interval``, written as in mathematics: ``"(0, 1)"``,
    ``"[0, inf)"``."""
    low_text, high_text = (t.strip() for t in interval[1:-1].split(","))
    low, high = float(low_text), float(high_text)
    low_open, high_open = interval[0] == "(", interval[-1] == ")"
    if high == math.inf:
        expected = f"a number {'>' if low_open else '>='} {low_text}"
    else:
        expected = f"a number in {interval}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan  # fails every comparison below
        above = low < value if low_open else low <= value
        below = value < high if high_open else value <= high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def existing_file(text: str) -> str:
    """An argparse type: the path of an existing file."""
    if not os.path.isfile(text):
        what = "a directory" if os.path.isdir(text) else "no such file"
        raise argparse.ArgumentTypeError(f"expected an existing file, got {text!r} ({what})")
    return text


def existing_dir(text: str) -> str:
    """An argparse type: the path of an existing directory."""
    if not os.path.isdir(text):
        what = "a file" if os.path.exists(text) else "no such directory"
        raise argparse.ArgumentTypeError(f"expected an existing directory, got {text!r} ({what})")
    return text


def output_dir(text: str) -> str:
    """An argparse type: a directory to write into (made when missing), not an existing file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a directory to write into, got {text!r} (a file)")
    return text


def checkpoint_path(text: str) -> str:
    """An argparse type: a checkpoint file to write (its directory made when missing), not an
    existing directory."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a checkpoint file, got {text!r} (a directory)")
    return text


def output_file(*suffixes: str) -> Callable[[str], str]:
    """An argparse type: a file to write, named with one of ``suffixes`` (any when none are
    given), in an existing directory."""

    def parse(text: str) -> str:
        if suffixes and os.path.splitext(text)[1].lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"expected a {' or '.join(suffixes)} path, got {text!r}")
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"expected a file to write, got {text!r} (a directory)")
        folder = os.path.dirname(text)
        if folder and not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(f"expected a file in an existing directory, got {text!r}")
        return text

    return parse


def read_checkpoint(path: str, kinds: tuple[str, ...], option: str = "checkpoint") -> dict:
    """The checkpoint dict ``convloc train`` wrote at ``path``; a :class:`UsageError` naming
    ``option`` when the file is missing, truncated or corrupt, holds no run of one of ``kinds``,
    or holds a run whose training has not finished."""
    from convloc.models.common import load_checkpoint

    with naming({"checkpoint": option}):
        state = load_checkpoint(path)
    kind = state.get("kind")
    if kind not in kinds:
        got = f"one of {kind!r}" if kind else "a file without a convloc kind"
        raise UsageError(f"{option}: expected a checkpoint of `convloc train {'|'.join(kinds)}`, got {got}")
    if not state.get("complete", True):
        raise UsageError(
            f"{option}: {path!r} holds a {kind} run whose training stopped before the end; "
            f"rerun its `convloc train {kind}` command to finish it"
        )
    return state


def renamed(error: Exception, options: dict[str, str]) -> UsageError:
    """``error``, whose message starts with the name of the function argument at fault
    (``"split: no ..."``), as a :class:`UsageError` naming the command-line option instead
    (``options`` maps the one to the other, ``{"split": "--train-split"}``)."""
    name, _, rest = str(error).partition(": ")
    return UsageError(f"{options[name]}: {rest}" if name in options else str(error))


@contextlib.contextmanager
def naming(options: dict[str, str]) -> Iterator[None]:
    """Within it, a ``ValueError`` or ``FileNotFoundError`` whose message starts with a key of
    ``options`` (``"checkpoint: ..."``) becomes a :class:`UsageError` naming its option instead
    (``"--out: ..."``); other errors pass."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        if str(e).partition(": ")[0] not in options:
            raise
        raise renamed(e, options) from None


@contextlib.contextmanager
def building(path: str, kind: str, option: str = "checkpoint") -> Iterator[None]:
    """Within it, an error of building the model a checkpoint describes (a missing entry, weights
    of the wrong shapes) becomes a one-line :class:`UsageError` naming ``option``."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(
            f"{option}: {path!r} does not hold a whole {kind} model ({type(e).__name__}: {reason})"
        ) from None


def set_threads(n: int) -> None:
    """``--threads N``: torch's threads and convloc's kernels' (RoI pooling, NMS, the dense CRF)
    alike; 0 leaves both at their defaults."""
    if n:
        import torch

        import convloc

        torch.set_num_threads(n)
        convloc.set_num_threads(n)


def device_args(p, training: bool = False) -> None:
    """``--device`` on parser ``p``; with ``training``, ``--amp`` as well."""
    p.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to compute: auto takes the GPU when convloc's CUDA kernels can run here, else the "
        "CPU; cuda under torchrun takes the GPU of the process's LOCAL_RANK",
    )
    if training:
        p.add_argument(
            "--amp",
            choices=["off", "bf16", "fp16"],
            default="off",
            help="mixed precision: forward passes under torch.autocast in bfloat16 or float16 (with "
            "loss scaling; GPU only), weights and optimizer in float32",
        )


def training_args(p, workers_help: str) -> None:
    """The options every ``convloc train`` command shares: ``--seed``, ``--threads``, ``--device``,
    ``--amp`` and ``--workers`` (what its readers do: ``workers_help``)."""
    p.add_argument("--seed", type=integer(0), default=0, help="random seed: a seed gives one model")
    p.add_argument(
        "--threads",
        type=integer(0),
        default=0,
        help="threads of torch and of convloc's kernels per process; 0: their defaults",
    )
    device_args(p, training=True)
    p.add_argument("--workers", type=integer(0), default=0, help=workers_help)


def pick_device(args):
    """``args.device`` (and ``args.amp``) checked: the torch device, or a :class:`UsageError` naming
    the option (no GPU usable for ``cuda``, an index out of range, fp16 on the CPU). Nothing is
    printed: :func:`announce_device` says it once the command's other inputs passed their checks."""
    from convloc.models.common import Precision, resolve_device

    with naming({"device": "--device", "amp": "--amp"}):
        device = resolve_device(args.device)
        Precision(getattr(args, "amp", "off"), device)
    return device


def announce_device(device, args) -> None:
    """One line on stderr (from rank 0 under torchrun): the device chosen, and why for ``auto``."""
    from convloc.models.common import describe_device, is_main

    if not is_main():
        return
    why = ""
    if args.device == "auto":
        why = (
            " (auto: a GPU convloc's CUDA kernels run on)"
            if device.type == "cuda"
            else " (auto: no GPU for convloc's CUDA kernels)"
        )
    amp = f", autocast {args.amp}" if getattr(args, "amp", "off") != "off" else ""
    print(f"device: {describe_device(device)}{amp}{why}", file=sys.stderr)
