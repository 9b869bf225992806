"""Shared benchmark harness: warm-up, interleaved repeats, medians and ratios against a peer.

Times on a busy machine move 10-20 % between runs, so convloc and its peer are timed
alternately in the same process and only their ratio is reported as meaningful.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int


@dataclass
class Row:
    case: str
    ours: Timing
    peer_name: str | None = None
    peer: Timing | None = None
    extra: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """Peer time / convloc time (> 1: convloc is faster)."""
        return self.peer.median_ms / self.ours.median_ms if self.peer else None


def _summary(samples: list[float]) -> Timing:
    ms = [s * 1e3 for s in samples]
    return Timing(statistics.median(ms), min(ms), max(ms), len(ms))


SETTLE_S = 0.005  # longer than convloc's thread pool spins after a parallel pass (2 ms)


def compare(
    ours: Callable[[], object],
    peer: Callable[[], object] | None = None,
    *,
    warmup: int = 2,
    min_repeats: int = 5,
    budget_s: float = 2.0,
    max_repeats: int = 1000,
) -> tuple[Timing, Timing | None]:
    """Times ours (and peer) alternately until both min_repeats and the time budget are met."""
    fns = [ours] + ([peer] if peer else [])
    for f in fns:
        for _ in range(warmup):
            f()
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(samples[0]) < max_repeats and (
        len(samples[0]) < min_repeats or time.perf_counter() - start < budget_s
    ):
        for i, (f, s) in enumerate(zip(fns, samples)):
            if i > 0:  # the peer starts once convloc's workers have stopped spinning (they would take a core)
                time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            f()
            s.append(time.perf_counter() - t0)
    timings = [_summary(s) for s in samples]
    return timings[0], (timings[1] if peer else None)


class Report:
    """Rows of a benchmark, printed as a table and optionally written as JSON."""

    def __init__(self, title: str):
        self.title = title
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def add(self, case: str, ours: Timing, peer_name: str | None = None, peer: Timing | None = None, **extra):
        row = Row(case, ours, peer_name, peer, extra)
        self.rows.append(row)
        print(self.format_row(row), flush=True)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    @staticmethod
    def header() -> str:
        return f"{'case':<52} {'convloc ms':>11} {'peer':>18} {'peer ms':>9} {'speed-up':>9}"

    @staticmethod
    def format_row(r: Row) -> str:
        peer = (
            f"{r.peer_name:>18} {r.peer.median_ms:9.2f} {r.speedup:8.2f}x" if r.peer else f"{'(no peer)':>18}"
        )
        extra = "  " + " ".join(f"{k}={v}" for k, v in r.extra.items()) if r.extra else ""
        return f"{r.case:<52} {r.ours.median_ms:11.2f} {peer}{extra}"

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "rows": [dict(asdict(r), speedup=r.speedup) for r in self.rows],
            "notes": self.notes,
        }


def import_peer(report: Report, name: str):
    """The peer's module, or None (with a note) when it is missing or broken."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - missing, or built against another torch
        report.note(f"{name} is not importable ({type(e).__name__}): convloc times only")
        return None


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``convloc bench`` and of a bench_*.py file run as a script."""
    from convloc.commands import integer, output_file, real

    parser.add_argument(
        "--json", metavar="FILE", type=output_file(".json"), help="also write the results as JSON"
    )
    parser.add_argument(
        "--budget", type=real("(0, inf)"), default=2.0, help="seconds per case (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=integer(0), default=0, help="CPU threads for convloc; 0: all (default: %(default)s)"
    )


def start(title: str, args: argparse.Namespace) -> Report:
    import convloc

    convloc.set_num_threads(args.threads)
    info = convloc.info()
    print(f"# {title} — convloc {info['version']}, {convloc.get_num_threads()} threads, simd {info['simd']}")
    print(Report.header())
    return Report(title)


def finish(report: Report, args: argparse.Namespace) -> Report:
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=2)
        print(f"wrote {args.json}")
    return report


def main_for(run: Callable[[argparse.Namespace], Report], description: str) -> None:
    """Entry point for running a bench_*.py file as a script."""
    parser = argparse.ArgumentParser(description=description)
    add_common_args(parser)
    run(parser.parse_args())
