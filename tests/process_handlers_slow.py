"""A handler module that is slow to import in a child process, as numpy or torch can be
(tests/test_process_pool.py): the import must not count against the attempt's timeout."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

if multiprocessing.parent_process() is not None:  # in a child of the pool only
    time.sleep(1.0)


def quick(job: Any) -> str:
    return "quick"
