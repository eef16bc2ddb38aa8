"""Shared pieces of the reliability suite: worker processes, journals, row counts, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import pgqrs_sqla as pgqrs
from tests._wait import eventually

PROC = Path(__file__).parents[1] / "worker_proc.py"


@dataclass
class Procs:
    """Worker processes of one test: started, killed and stopped here, each with a log file."""

    mode: str
    url: str
    root: Path
    journal: Path = field(init=False)
    stats: Path = field(init=False)
    live: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    started: int = 0
    killed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.journal = self.root / f"{self.mode}.journal"
        self.stats = self.root / f"{self.mode}.stats"

    async def start(self, name: str) -> asyncio.subprocess.Process:
        log = (self.root / f"{name}.log").open("w")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(PROC),
                self.mode,
                self.url,
                name,
                str(self.journal),
                str(self.stats),
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        self.live[name] = proc
        self.started += 1
        return proc

    async def kill(self, name: str) -> None:
        proc = self.live.pop(name)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        self.killed.append(proc.pid)

    async def storm(
        self,
        slots: int,
        seconds: float,
        pause: tuple[float, float],
        done: Callable[[], Awaitable[bool]],
        *,
        kills: int = 5,
    ) -> float:
        """Start a process in each of ``slots`` slots, then SIGKILL a random slot's process
        every ``pause`` seconds (uniform between the two) and start a fresh one in its place,
        until ``seconds`` have passed and ``kills`` processes were killed, or ``done()``.
        Returns when the storm began (the ``time.monotonic()`` once every slot's worker ran).

        Only a process whose worker is running is killed: on a loaded machine a fresh
        interpreter may take seconds to start, and killing it before then tests nothing.
        """
        incarnation = dict.fromkeys(range(slots), 0)
        for slot in range(slots):
            await self.start(f"w{slot}-0")
        for slot in range(slots):
            await self.until_ready(f"w{slot}-0")
        started, killed = time.monotonic(), 0
        while (time.monotonic() - started < seconds or killed < kills) and not await done():
            await asyncio.sleep(random.uniform(*pause))
            running = [s for s in range(slots) if self.ready(f"w{s}-{incarnation[s]}")]
            if not running:
                continue
            slot = random.choice(running)
            await self.kill(f"w{slot}-{incarnation[slot]}")
            killed += 1
            incarnation[slot] += 1
            await self.start(f"w{slot}-{incarnation[slot]}")
        return started

    async def until_ready(self, name: str, timeout: float = 60) -> None:
        """Wait until ``name`` has its worker running, or has exited."""

        async def is_ready() -> bool:
            return self.ready(name) or self.live[name].returncode is not None

        await eventually(is_ready, timeout=timeout, interval=0.05, what=f"{name} ready")

    def ready(self, name: str) -> bool:
        """The process has its worker running (it printed ``ready``)."""
        log = self.root / f"{name}.log"
        return log.exists() and "ready" in log.read_text().split()

    async def stop_all(self, timeout: float = 30) -> dict[str, int | None]:
        """SIGTERM every live process (once it is ready, so the signal reaches its handler)
        and wait for it; returns the exit codes by name."""
        for name in self.live:
            await self.until_ready(name, timeout)
        for proc in self.live.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        await self._diagnose_if_slow(8)
        for name, proc in self.live.items():
            try:
                codes[name] = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                # Hung: have it write every thread's stack to its log (worker_proc.py's
                # faulthandler), so the failure shows where, then kill it.
                proc.send_signal(signal.SIGUSR1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 2)
                proc.kill()
                await proc.wait()
                codes[name] = None
        self.live.clear()
        return codes

    async def _diagnose_if_slow(self, after: float) -> None:
        """If a process still runs ``after`` s past SIGTERM, record what it is waiting for:
        who holds which file locks (``/proc/locks``, SQLite's among them) in
        ``slow-stop.log``, and each such process's asyncio tasks and threads in its own log
        (``worker_proc.py``'s SIGUSR2 and SIGUSR1). A stop that then times out shows them."""
        live = [p for p in self.live.values() if p.returncode is None]
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), after)
            return
        except TimeoutError:
            pass
        running = {n: p.pid for n, p in self.live.items() if p.returncode is None}
        locks = await asyncio.to_thread(_proc_locks)
        note = f"{after:g} s after SIGTERM: test pid {os.getpid()}; running {running}\n{locks}"
        await asyncio.to_thread((self.root / "slow-stop.log").write_text, note)
        for p in live:
            if p.returncode is None:
                p.send_signal(signal.SIGUSR2)
                p.send_signal(signal.SIGUSR1)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[dict[str, int | None]]:
        """The processes of one test: all stopped when the block ends, their exit codes then in
        the dict it yields; if the block fails, the processes' log tail is printed first."""
        codes: dict[str, int | None] = {}
        try:
            yield codes
        except BaseException:
            print(self.log_tail())
            raise
        finally:
            codes.update(await self.stop_all())

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.root.glob("*.log")):
            text = log.read_text().splitlines()
            # A slow stop's record (see stop_all) is shown whole.
            if log.name != "slow-stop.log" and not any(
                line.startswith(("Thread 0x", "TASK ")) for line in text
            ):
                text = text[-lines:]
            if text:
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def journal_lines(self) -> list[dict[str, Any]]:
        return read_jsonl(self.journal)

    def stats_lines(self) -> list[dict[str, Any]]:
        return read_jsonl(self.stats)


def _proc_locks() -> str:
    """The kernel's table of file locks (Linux), or nothing."""
    path = Path("/proc/locks")
    return path.read_text() if path.exists() else ""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def table_counts(store: pgqrs.Store) -> dict[str, int]:
    """Row counts of every pgqrs table."""
    t = store.tables
    counts = {}
    async with store._read() as conn:
        for table in (getattr(t, f.name) for f in fields(t)):
            counts[table.name] = (
                await conn.execute(select(func.count()).select_from(table))
            ).scalar_one()
    return counts


async def run_statuses(store: pgqrs.Store, workflow: str) -> dict[str, int]:
    r, w = store.tables.runs, store.tables.workflows
    stmt = (
        select(r.c.status, func.count())
        .join(w, w.c.id == r.c.workflow_id)
        .where(w.c.workflow_name == workflow)
        .group_by(r.c.status)
    )
    async with store._read() as conn:
        return {status: n for status, n in (await conn.execute(stmt)).all()}


def report(title: str, **figures: Any) -> None:
    """Print one figures line (``pytest -s`` shows it; docs/reliability.md quotes it)."""
    body = ", ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\nRELIABILITY {title}: {body}")
