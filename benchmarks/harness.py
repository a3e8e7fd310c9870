"""A small benchmark harness: candidate and baseline interleaved, medians, ratios.

Machines here are shared and noisy, so every benchmark runs its candidate and
its baseline side by side in one process, alternating, several times, and
reports medians and their ratio. :func:`record` appends the rows, the machine
and the command that reproduces them to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Row:
    """One measured quantity: ``candidate`` against ``baseline`` (medians, in ``unit``)."""

    name: str
    candidate: str
    baseline: str
    candidate_median: float
    baseline_median: float
    unit: str
    repeats: int

    @property
    def ratio(self) -> float:
        return self.candidate_median / self.baseline_median if self.baseline_median else float("nan")

    def line(self) -> str:
        return (
            f"| {self.name} | {self.candidate} | {self.candidate_median:.2f} {self.unit} | {self.baseline} | "
            f"{self.baseline_median:.2f} {self.unit} | **{self.ratio:.2f}x** | {self.repeats} |"
        )


def interleaved(candidate: Callable[[], float], baseline: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    """Run both ``repeats`` times, alternating which goes first; each returns its measurement."""
    c, b = [], []
    for i in range(repeats):
        if i % 2 == 0:
            b.append(baseline())
            c.append(candidate())
        else:
            c.append(candidate())
            b.append(baseline())
        print(f"  repeat {i + 1}/{repeats}: candidate {c[-1]:.2f}, baseline {b[-1]:.2f}", flush=True)
    return c, b


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    return run


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cpus} CPUs, {mem:.0f} GiB, Python {platform.python_version()}"


def record(title: str, rows: list[Row], notes: str = "") -> str:
    """Append a section to docs/benchmarks.md and return it."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], DOC.parents[1]), *sys.argv[1:]])
    section = "\n".join(
        [
            f"\n### {title} ({time.strftime('%Y-%m-%d')})\n",
            f"Machine: {machine()}. Command: `{command}`.\n",
            "| measure | candidate | median | baseline | median | ratio | repeats |",
            "|---|---|---|---|---|---|---|",
            *(r.line() for r in rows),
            "",
            notes.strip(),
            "",
        ]
    )
    DOC.parent.mkdir(exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# Benchmarks\n\nEach section is appended by a script in `benchmarks/`; rerun it with the command shown.\n")
    with DOC.open("a") as f:
        f.write(section)
    print(section)
    return section
