"""What the benchmarks time with, and the load they print beside their ratios (no heavy imports)."""

from __future__ import annotations

import os
import time

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed seconds; ``cpu``: the process's CPU seconds, which other processes barely change."""


def load_average() -> str:
    """The 1- and 5-minute load averages: ratios measured on a busy machine need them beside them."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f} {five:.2f}"
