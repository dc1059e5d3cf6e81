"""``python -m shunter.cli``: the same as the ``shunter`` command (used by the worker
supervisor to start its worker processes)."""

from . import main

main()
