"""Where a store-owned enqueue's time goes (PostgreSQL): ``python -m bench.enqueue_costs``.

Each line is one way of writing one message, each its own committed statement, timed on the
wall clock and on this process's CPU clock (the client's share), against a scratch table of
the bench's and the pgqrs tables of a fresh store:

* ``raw``: the raw driver's ``INSERT`` on a connection of its own (the bench's R1 loop);
* ``pgqrs statement, raw driver``: pgqrs' enqueue statement (queue-name look-up, ``NOTIFY``)
  sent by the raw driver: what the server costs beyond ``raw``;
* ``... by queue id``: the same with the queue's id bound instead of looked up by name;
* ``pool + raw driver``: SQLAlchemy's pool checkout and checkin around the raw driver's insert;
* ``SQLAlchemy autocommit``: a pooled autocommit ``Connection.execute`` of a plain insert;
* ``store.queue(q).enqueue``: the whole of it.

    python -m bench.enqueue_costs --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy import text

from .harness import DEFAULT_PG, Backend

COLS = "(queue_id, payload, priority, enqueued_at, vt, read_ct, failed_ct)"


async def measure(url: str, n: int) -> list[tuple[str, float, float]]:
    async with Backend("postgresql", url) as b, b.fresh_store() as store:
        await store.create_queue("q")
        queue = store.queue("q")
        raw = await asyncpg.connect(b.url)
        try:
            await raw.execute(
                "DROP TABLE IF EXISTS raw_ref;"
                "CREATE TABLE raw_ref (id bigserial PRIMARY KEY, payload jsonb)"
            )
            qid = await raw.fetchval("SELECT id FROM pgqrs_queues WHERE queue_name = 'q'")
            by_name = (
                f"WITH i AS (INSERT INTO pgqrs_messages {COLS} SELECT q.id, $1::jsonb, 0, now(), "
                "now(), 0, 0 FROM pgqrs_queues q WHERE q.queue_name = $2 RETURNING id) "
                "SELECT i.id FROM i JOIN (SELECT pg_notify('pgqrs_wake', $2)) n ON true"
            )
            by_id = (
                f"WITH i AS (INSERT INTO pgqrs_messages {COLS} VALUES ($2, $1::jsonb, 0, now(), "
                "now(), 0, 0) RETURNING id) "
                "SELECT i.id FROM i JOIN (SELECT pg_notify('pgqrs_wake', 'q')) n ON true"
            )
            insert = text("INSERT INTO raw_ref (payload) VALUES (CAST(:p AS jsonb))")
            engine = store.engine

            async def raw_insert() -> None:
                await raw.execute("INSERT INTO raw_ref (payload) VALUES ($1)", '{"n": 1}')

            async def statement() -> None:
                await raw.fetch(by_name, '{"n": 1}', "q")

            async def statement_by_id() -> None:
                await raw.fetch(by_id, '{"n": 1}', qid)

            async def pooled_raw() -> None:
                async with engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    assert driver is not None
                    await driver.execute("INSERT INTO raw_ref (payload) VALUES ($1)", '{"n": 1}')

            async def sqlalchemy_autocommit() -> None:
                async with engine.connect() as conn:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(insert, {"p": '{"n": 1}'})

            async def enqueue() -> None:
                await queue.enqueue({"n": 1})

            ways: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("raw (R1's loop)", raw_insert),
                ("pgqrs statement, raw driver", statement),
                ("pgqrs statement by queue id, raw driver", statement_by_id),
                ("pool + raw driver", pooled_raw),
                ("SQLAlchemy autocommit execute", sqlalchemy_autocommit),
                ("store.queue(q).enqueue", enqueue),
            ]
            results = []
            for label, way in ways:
                for _ in range(100):  # warm up: statements prepared, connections open
                    await way()
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(n):
                    await way()
                wall = (time.perf_counter() - wall) / n * 1000
                cpu = (time.process_time() - cpu) / n * 1000
                results.append((label, wall, cpu))
            return results
        finally:
            await raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_PG)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.database_url, args.count))
    base = rows[0][1]
    print("| way | wall ms | client CPU ms | vs raw |\n|---|---:|---:|---:|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.3f} | {cpu:.3f} | {base / wall:.2f}× R1 |")


if __name__ == "__main__":
    main()
