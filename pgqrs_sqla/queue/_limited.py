"""The statements of a limited queue's claim: what is leased now, the candidates, the claim.

:mod:`pgqrs_sqla._limited_claim` runs them in one short transaction behind the queue row's
lock. Builders are pure and built once per set of tables.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, Update, and_, bindparam, func, or_, select

from ..dialects import utcnow
from ..models import RunStatus, Tables
from . import claim_update


@functools.cache
def leased_stmt(t: Tables, workflow: bool) -> Select[Any]:
    """How many messages are leased now, per ``concurrency_key`` (one row per key, NULL too).

    Leased: live, owned, and its lease not expired; so a run that waits (its message released
    until it wakes), a finished one (archived) and a crashed worker's past its lease count
    for nothing. For a workflow (``p_workflow_id``) it goes through the RUNNING runs, along
    their status index: every leased run message's run is RUNNING (the claim starts it in its
    own transaction), and the count costs what is running, not the backlog. For a plain queue
    (``p_queue_id``) it reads the queue's live messages.
    """
    m = t.messages
    leased = (m.c.archived_at.is_(None), m.c.consumer_worker_id.is_not(None), m.c.vt > utcnow())
    stmt = select(m.c.concurrency_key, func.count().label("n")).group_by(m.c.concurrency_key)
    if workflow:
        r = t.runs
        return stmt.select_from(r.join(m, m.c.id == r.c.message_id)).where(
            r.c.workflow_id == bindparam("p_workflow_id", type_=BigInteger),
            r.c.status == RunStatus.RUNNING.value,
            *leased,
        )
    return stmt.where(m.c.queue_id == bindparam("p_queue_id", type_=BigInteger), *leased)


@functools.cache
def candidates_stmt(t: Tables) -> Select[Any]:
    """A page of ready messages of ``p_queue_id`` in claim order, after a cursor.

    Claim order is priority (highest first), then id. The page is up to ``p_page`` messages
    of the highest priority after the cursor (``p_below``, ``p_after``: the priority and id
    of the last message seen; ``p_below`` above every priority to start), read along the
    ready index as the unlimited claim reads it. Messages whose key is full (``p_blocked``)
    are left out; a message without a key never is.
    """
    m = t.messages
    ready = (
        m.c.queue_id == bindparam("p_queue_id", type_=BigInteger),
        m.c.archived_at.is_(None),
        m.c.vt <= utcnow(),
        or_(
            m.c.concurrency_key.is_(None),
            m.c.concurrency_key.not_in(bindparam("p_blocked", expanding=True)),
        ),
    )
    below = bindparam("p_below", type_=BigInteger)  # (one above PRIORITY_MAX to start)
    after = or_(
        m.c.priority < below,
        and_(m.c.priority == below, m.c.id > bindparam("p_after", type_=BigInteger)),
    )
    top = select(func.max(m.c.priority)).where(*ready, after).scalar_subquery()
    return (
        select(m.c.id, m.c.priority, m.c.concurrency_key)
        .where(*ready, after, m.c.priority == top)
        .order_by(m.c.id)
        .limit(bindparam("p_page", type_=Integer))
    )


@functools.cache
def claim_ids_stmt(t: Tables) -> Update:
    """Claim the messages ``p_ids`` (the limited claim's choice) that are still ready."""
    m = t.messages
    return claim_update(
        t,
        and_(
            m.c.id.in_(bindparam("p_ids", expanding=True)),
            m.c.archived_at.is_(None),
            m.c.vt <= utcnow(),
        ),
    )
