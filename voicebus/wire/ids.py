"""Event ids nobody can guess from earlier ones.

De-duplication keys on (topic, source, id): a peer that could predict the ids a
service emits next could send them first, on another topic or not, and probe or
pollute what receivers remember. So each id is ``<prefix><16 hex digits>``, the
digits 64 bits from the operating system's CSPRNG (`os.urandom`, read 4 KiB at a
time: 512 ids), independent of every other id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial

_CHUNK = 4096


def random_ids(prefix: str) -> Callable[[], str]:
    """A callable giving ``prefix`` + 16 random hex digits per call (no Python frame
    per call: the ids of each 4 KiB read are made together)."""
    return partial(next, _ids(prefix))


def _ids(prefix: str) -> Iterator[str]:
    while True:
        pool = os.urandom(_CHUNK).hex()  # 16 hex digits (64 bits) per id
        yield from [prefix + pool[i : i + 16] for i in range(0, len(pool), 16)]
