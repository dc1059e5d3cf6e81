"""shunter's fault suite: proves that nothing is lost and nothing is committed twice.

Real Redis servers and real worker processes, an independent SQLite ledger, and a checker
in the style of Jepsen's total-queue checker (see docs/reliability.md). Not shipped in the
wheel. Run it with ``python -m faults [--full|--short] [--scenario NAME]`` or ``make chaos``.
"""
