"""JSON encoding with the checks a job queue needs, and validation of names and ids.

orjson is fast but lenient where a queue must not be: it writes NaN as ``null`` and
serializes datetimes to strings, so values would not come back as they went in. We make
it strict (datetimes, dataclasses and subclasses pass through to a failing ``default``)
and look for non-finite floats only when the output contains ``null`` at all.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .errors import DecodeError, InvalidInput, PayloadTooLarge

__all__ = ["dumps", "encoded", "loads", "validate_job_id", "validate_queue_name", "validate_task_name"]

_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS

_QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_.\-@=+/]{1,128}")
_GROUP_RE = re.compile(r"[A-Za-z0-9_.\-@=+/:]{1,128}")
_TASK_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,199}")


def _reject(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def dumps(value: object, what: str = "payload", limit: int | None = None) -> bytes:
    """Encode ``value`` as JSON, raising :class:`InvalidInput` for anything that would not
    round-trip (NaN/Infinity, datetimes, bytes, sets, objects, integers beyond 64 bits,
    nesting deeper than 254, non-string keys) and :class:`PayloadTooLarge` past ``limit``."""
    try:
        out = orjson.dumps(value, default=_reject, option=_STRICT)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"{what} is not JSON-serializable: {exc}") from None
    if b"null" in out and _has_non_finite(value):
        raise InvalidInput(f"{what} contains NaN or Infinity, which JSON cannot represent")
    if limit is not None and len(out) > limit:
        raise PayloadTooLarge(f"{what} is {len(out)} bytes encoded, over the limit of {limit}")
    return out


def encoded(raw: bytes) -> Any:
    """JSON that :func:`dumps` already produced (in a handler's process), as a value that a
    later :func:`dumps` writes as is: no decoding and encoding again on the worker's loop."""
    return orjson.Fragment(raw)


def loads(raw: bytes | str, what: str = "value") -> Any:
    """Decode JSON written by :func:`dumps`; anything else raises :class:`DecodeError`."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON ({exc}); was it written by shunter?") from None


def _check(pattern: re.Pattern[str], value: object, what: str, rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a str, got {type(value).__name__}")
    if not pattern.fullmatch(value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise InvalidInput(f"invalid {what} {shown!r}: {rule}")
    return value


def validate_queue_name(name: object) -> str:
    """Queue names: 1-100 of ``A-Z a-z 0-9 _ . -``, starting with a letter or digit."""
    return _check(_QUEUE_RE, name, "queue name",
                  "use 1-100 letters, digits, '_', '.', '-', starting with a letter or digit")


def validate_job_id(job_id: object) -> str:
    """Job ids: 1-128 of ``A-Z a-z 0-9 _ . - @ = + /`` (no braces, colons, spaces, globs)."""
    return _check(_JOB_ID_RE, job_id, "job id",
                  "use 1-128 letters, digits and '_.-@=+/' (no ':', '{', '}', '*' or spaces)")


def validate_group(group: object) -> str:
    """Group names (``add(group=...)``): 1-128 of ``A-Z a-z 0-9 _ . - @ = + / :``, so
    ``post:123`` or ``user/42`` (no spaces, braces or globs)."""
    return _check(_GROUP_RE, group, "group",
                  "use 1-128 letters, digits and '_.-@=+/:' (no '{', '}', '*' or spaces)")


def validate_task_name(name: object) -> str:
    """Task names: a Python-identifier-like name, dots and dashes allowed, up to 200 chars."""
    return _check(_TASK_RE, name, "task name",
                  "use letters, digits, '_', '.', '-', starting with a letter or '_'")
