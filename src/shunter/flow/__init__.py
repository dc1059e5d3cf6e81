"""Flow control: how jobs are paced and admitted (issue 11). Groups, rate limits and
concurrency (:mod:`.limits`; enforced in the claim, lua/lib/claim_groups.lua), dedup modes
(:mod:`.dedup`; enforced in enqueue, lua/lib/dedup_hit.lua) and spreading a batch of jobs
across a time window (:mod:`.spread`)."""

from .spread import spread_entries, spread_offsets

__all__ = ["spread_entries", "spread_offsets"]
