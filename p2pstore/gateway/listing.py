"""One page of a listing: names rolled up into common prefixes at a delimiter, as S3 lists.

Strategy: the backend lists names in order after a cursor; this walks that order, folds every
name containing the delimiter (after the prefix) into its common prefix and jumps the cursor
past the whole prefix, so a "directory" of a million names costs one row, not a million.  A
page holds at most ``max_keys`` entries (names plus prefixes); it is truncated if one more
entry exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pstore.gateway.backend import ObjectInfo

PAST = "\U0010ffff"
"""Sorts after every character a name can continue with: ``prefix + PAST`` skips the prefix."""
BATCH = 1000

Fetch = Callable[[str, int], Awaitable[list[ObjectInfo]]]
"""(after, limit) -> the next names, in order."""


@dataclass(frozen=True, slots=True)
class Page:
    objects: list[ObjectInfo]
    prefixes: list[str]
    truncated: bool
    cursor: str
    """Where the next page starts (after): the last name, or a prefix followed by PAST."""
    skip: str | None
    """The last common prefix: names under it (even past the cursor) are already listed."""


async def list_page(
    fetch: Fetch,
    *,
    prefix: str,
    delimiter: str,
    after: str,
    max_keys: int,
    skip: str | None = None,
) -> Page:
    """One page from ``after`` (exclusive); ``skip``: a common prefix a previous page ended
    with, whose names must not be listed again."""
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    cursor = after
    while True:
        batch = await fetch(cursor, BATCH)
        for info in batch:
            if skip is not None and info.key.startswith(skip):
                cursor = info.key  # a name past prefix + PAST: still under the prefix
                continue
            if len(objects) + len(prefixes) == max_keys:
                return Page(objects, prefixes, True, cursor, skip)
            rest = info.key[len(prefix) :]
            cut = rest.find(delimiter) if delimiter else -1
            if cut >= 0:
                skip = prefix + rest[: cut + len(delimiter)]
                prefixes.append(skip)
                cursor = skip + PAST
                break  # ask again from past the prefix
            objects.append(info)
            cursor = info.key
        else:
            if len(batch) < BATCH:
                return Page(objects, prefixes, False, cursor, skip)
