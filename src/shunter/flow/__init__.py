"""Flow control: how jobs are paced and admitted (issue 11). Today: spreading a batch of
jobs across a time window (:mod:`.spread`); groups, rate limits and dedup come here."""

from .spread import spread_entries, spread_offsets

__all__ = ["spread_entries", "spread_offsets"]
