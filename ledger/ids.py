"""Run ids: ULIDs (48-bit ms timestamp + 80 random bits, Crockford base32), so sorting ids sorts runs by start."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_MAX = (1 << 80) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _reset_after_fork() -> None:
    # A forked child would otherwise continue the parent's monotonic sequence and could mint the parent's
    # next id in the same millisecond.
    global _last_ms, _last_random
    _last_ms, _last_random = -1, 0


os.register_at_fork(after_in_child=_reset_after_fork)


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_run_id() -> str:
    """A new ULID; ids made by one process are strictly increasing even within a millisecond or if the clock
    steps back (the ULID spec's monotonic mode)."""
    global _last_ms, _last_random
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_random + 1
            if rand > _RANDOM_MAX:  # 2^80 ids in one ms cannot happen; borrow the next ms rather than fail
                ms, rand = ms + 1, int.from_bytes(os.urandom(10), "big") >> 1
        else:
            # Halving leaves headroom so incrementing within a millisecond practically never overflows.
            rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last_ms, _last_random = ms, rand
        return _encode((ms << 80) | rand)


def is_run_id(text: str) -> bool:
    """A run id as new_run_id makes them: 26 Crockford base32 capitals, the first at most 7 (48-bit time).
    Ids become file names in the ledger dir, so nothing else (no '/', no '..') may pass."""
    return len(text) == 26 and text[0] in "01234567" and all(ch in _ALPHABET for ch in text)
