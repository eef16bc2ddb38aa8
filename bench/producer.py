"""Child process of the cross-process latency measurement (``bench.cases.latency_other_process``).

Reads a number per line on stdin; for each, triggers a run of ``ping`` in an ``AsyncSession``
of its own and prints ``<run id> <perf_counter just before the commit>``. Being another
process, its commits can wake the parent's worker only through PostgreSQL ``NOTIFY``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from sqlalchemy.ext.asyncio import async_sessionmaker

import pgqrs_sqla as pgqrs


async def main(url: str) -> None:
    store = await pgqrs.connect(url, pool_size=1)
    try:
        sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        async with sessions() as session:  # open the connection before the first sample
            await session.connection()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            async with sessions() as session:
                await session.begin()
                run_id = await pgqrs.workflow("ping").trigger({"i": int(line)}).execute(session)
                t0 = time.perf_counter()
                await session.commit()
            print(run_id, repr(t0), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
