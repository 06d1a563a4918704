"""Device supervision: keep one device's source open, reopening it with backoff and jitter.

Each asset's device runs in its own task. A transport failure (``SourceError``) or a driver bug
(any other exception, logged with its traceback) closes the source, counts a reconnect and tries
again after an exponentially growing, jittered delay, so a flapping device neither spins nor
stalls the others. Readings go into the gateway's bounded ingest queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from gateway.errors import ConfigError, SourceError
from gateway.readings import Reading
from gateway.sources import Source, SourceContext, SourceSpec, open_source

__all__ = ["Backoff", "supervise"]

log = logging.getLogger("twinedge.devices")


class Backoff:
    """Exponential backoff with jitter: ``first`` doubling up to ``cap`` seconds, ±50 %."""

    def __init__(self, first: float = 0.2, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def next(self) -> float:
        d = self.delay * random.uniform(0.5, 1.5)
        self.delay = min(self.delay * 2, self.cap)
        return d

    def reset(self) -> None:
        self.delay = self.first


async def supervise(
    spec: SourceSpec,
    ctx: SourceContext,
    queue: asyncio.Queue[Reading],
    *,
    on_open: Callable[[Source | None], None] = lambda _src: None,
    backoff: Backoff | None = None,
) -> None:
    """Run forever (until cancelled): open ``spec``, forward its readings, reopen on failure."""
    backoff = backoff or Backoff()
    extra = {"device": ctx.asset}
    first = True
    while True:
        if not first:
            ctx.counters.reconnects += 1
        first = False
        try:
            async with open_source(spec, ctx) as source:
                on_open(source)
                log.info("%s: %s open", ctx.asset, spec.raw, extra=extra)
                async for reading in source:
                    backoff.reset()
                    await queue.put(reading)
            log.warning("%s: %s ended", ctx.asset, spec.raw, extra=extra)
        except SourceError as e:
            log.warning("%s: %s", ctx.asset, e.reason, extra=extra)
        except ConfigError as e:  # will not fix itself: say so plainly and retry rarely
            log.error("%s: %s", ctx.asset, e, extra=extra)
            backoff.delay = backoff.cap
        except Exception:  # a driver bug must not take the gateway down: log it whole, retry
            log.exception("%s: driver for %s failed", ctx.asset, spec.raw, extra=extra)
        finally:
            on_open(None)
        await asyncio.sleep(backoff.next())
