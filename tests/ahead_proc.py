"""A worker process that claims ahead, for the test that SIGKILLs it (test_prefetch.py).

    python tests/ahead_proc.py URL JOURNAL

Serves the plain queue ``ahead`` with the default worker (leases of 1 s) and journals each
payload it handles, one JSON line each (a single ``write(2)``: it survives a SIGKILL); the
handler of the payload ``block`` never returns.
"""

from __future__ import annotations

import asyncio
import sys

import pgqrs_sqla as pgqrs
from bench.scaleout import Journal
from pgqrs_sqla import _prefetch


async def main(url: str, path: str) -> None:
    _prefetch.PREFETCH_WINDOW = 3600.0  # any pace counts as quick, however loaded the machine
    journal = Journal(path)
    store = await pgqrs.connect(url)

    async def handler(message: pgqrs.Message) -> None:
        journal.write(payload=message.payload)
        if message.payload == "block":
            await asyncio.Event().wait()

    worker = await (
        pgqrs.consumer("ahead-proc", None, "ahead")
        .handler(handler)
        .create(store, visibility_timeout=1.0, poll_interval=0.05)
    )
    async with worker:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
