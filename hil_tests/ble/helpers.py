"""Small waiting helpers for the BLE system tests: wait for an event, never for a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from gateway.readings import Reading


async def collect(
    source: AsyncIterator[Reading],
    done: Callable[[list[Reading]], bool],
    within: float = 5.0,
) -> list[Reading]:
    """Readings from ``source`` until ``done(readings)``; fail after ``within`` seconds."""
    got: list[Reading] = []
    try:
        async with asyncio.timeout(within):
            async for r in source:
                got.append(r)
                if done(got):
                    return got
    except TimeoutError:
        seen = sorted({r.quantity for r in got})
        raise AssertionError(f"timed out with {len(got)} readings of {seen}") from None
    raise AssertionError("source ended")
