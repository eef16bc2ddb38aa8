"""Child process of the cross-process latency measurements (``bench.cases.latency_other_process``,
``bench.waits.event_round_trip``): ``python -m bench.producer URL [WORKFLOW]``.

Reads one request per line on stdin, each in an ``AsyncSession`` of its own:

* ``N``: triggers a run of WORKFLOW (default ``ping``) with ``{"i": N}``; prints
  ``<run id> <perf_counter just before the commit>``;
* ``event RUN_ID N``: sends event ``go`` with payload N to run RUN_ID; prints
  ``<perf_counter just before the commit>``.

Being another process, its commits can wake the parent's worker only through PostgreSQL
``NOTIFY``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from sqlalchemy.ext.asyncio import async_sessionmaker

import pgqrs_sqla as pgqrs


async def main(url: str, workflow: str) -> None:
    store = await pgqrs.connect(url, pool_size=1)
    try:
        sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        async with sessions() as session:  # open the connection before the first sample
            await session.connection()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            words = line.split()
            async with sessions() as session:
                await session.begin()
                if words[0] == "event":
                    await store.send_event(int(words[1]), "go", int(words[2]), target=session)
                    t0 = time.perf_counter()
                    await session.commit()
                    print(repr(t0), flush=True)
                    continue
                run_id = (
                    await pgqrs.workflow(workflow).trigger({"i": int(words[0])}).execute(session)
                )
                t0 = time.perf_counter()
                await session.commit()
            print(run_id, repr(t0), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ping"))
