"""What the machine offers this process."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its affinity where the system tells it, else every core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
