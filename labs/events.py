"""A run's events: numbered, persisted, then broadcast. Every writer (the launch, the worker, a
cancel, the reaper, the dispatcher) appends through event_append, so a browser replaying
"everything after seq N" from the database never misses one."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from labs.models import Run, RunEvent
from ops.realtime import broadcast


def event_append(*, run_id: int, type: str, payload: dict, notify: bool = True) -> RunEvent:
    """Persist the next numbered event of a run, then (after commit) notify its Channels group.

    The UPDATE of last_seq locks the run's row until the transaction commits, so concurrent
    writers (worker, cancel, reaper) get consecutive numbers and commit them in order: a
    browser reading "everything after seq N" can never skip an event that commits later.
    """
    with transaction.atomic():
        Run.objects.filter(pk=run_id).update(last_seq=F("last_seq") + 1)
        seq = Run.objects.filter(pk=run_id).values_list("last_seq", flat=True).get()
        event = RunEvent.objects.create(run_id=run_id, seq=seq, type=type, payload=payload)
    if notify:
        group = Run.group_name_for(run_id)
        # Persist first, notify after commit: a notified browser must find the row.
        transaction.on_commit(lambda: broadcast(group, {"type": "stream.event"}))
    return event
