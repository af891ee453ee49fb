"""Websocket consumers that stream numbered events of one owned object.

The protocol is the same for every stream: connect with `?after=<last seq seen>`, receive every
later event from the database in order, then live ones. Live messages only say "new events
exist"; the consumer always reads them from the database, so the browser sees no gap and no
duplicate whatever the channel layer drops or reorders.
"""

import asyncio
import hashlib
import logging
import time
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404

from ops import limits
from ops.access import get_ping_for_user

log = logging.getLogger(__name__)

FORBIDDEN = 4403  # close code for a refused stream (4000-4999 are the application's own)
TOO_MANY = 4429  # the learner has WS_PER_USER streams open already (the page retries with back-off)
UNAVAILABLE = 1013  # "try again later": the counter of open streams (Redis) cannot be asked
# An open stream's slot lapses unless refreshed this often (a process that died cannot release it).
SLOT_TTL_S = 90.0
SLOT_REFRESH_S = 30.0


def session_group(session_key: str) -> str:
    """The channel-layer group of every stream one login session has open: logging out closes them."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def end_session_streams(session_key: str | None) -> None:
    """Close the streams of a session that just ended (close_streams_on_logout), in every web
    process: the session's group reaches whichever process holds each stream."""
    if not session_key:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(session_group(session_key), {"type": "session.ended"})
    except Exception:  # logging out must work while Redis is away; the streams then end with it
        log.warning("could not close the streams of an ended session", exc_info=True)


def close_streams_on_logout(sender, request, user, **kwargs) -> None:
    """The user_logged_out receiver (connected in accounts.apps): a socket outliving its login
    would keep streaming a learner's runs to whoever uses the browser next."""
    end_session_streams(getattr(getattr(request, "session", None), "session_key", None))


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses name the access helper, the group and how to read events after a sequence."""

    def get_object(self, user, pk):  # pragma: no cover - abstract
        raise NotImplementedError

    def group_for(self, obj) -> str:
        return obj.group_name

    def read_events(self, obj, after: int) -> tuple[list[dict], bool]:
        """Return (events with seq > after, whether the stream is finished)."""
        raise NotImplementedError  # pragma: no cover

    async def connect(self):
        user = self.scope["user"]
        pk = self.scope["url_route"]["kwargs"]["pk"]
        try:
            # Authorize before joining the group or reading anything: a refused socket never
            # sees a single event.
            self.obj = await database_sync_to_async(self.get_object)(user, pk)
        except (Http404, PermissionDenied):
            # Accept, then close with our code: a socket closed before accept() reaches the
            # browser as 1006 (abnormal closure), which a client cannot tell from a network
            # failure and so retries forever; 4403 tells the page to stop and say why.
            await self.accept()
            await self.close(code=FORBIDDEN)
            return
        code = await self._take_slot(user)
        if code:
            await self.accept()
            await self.close(code=code)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.last_seq = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            self.last_seq = 0
        self.last_sync = 0.0
        self.group = self.group_for(self.obj)
        self.groups_joined = [self.group]
        session_key = getattr(self.scope.get("session"), "session_key", None)
        if session_key:
            self.groups_joined.append(session_group(session_key))
        # Join before replaying: an event written during the replay still triggers a read.
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.flush()

    async def _take_slot(self, user) -> int | None:
        """Hold one of the learner's WS_PER_USER stream slots (staff too: a socket costs the same);
        the close code when none is free or they cannot be counted."""
        self.slot_key = f"ws:user:{user.pk}"
        try:
            taken = await sync_to_async(limits.slot_take, thread_sensitive=False)(
                self.slot_key, self.channel_name, limit=settings.WS_PER_USER, ttl_s=SLOT_TTL_S)
        except limits.LimiterUnavailable:
            return UNAVAILABLE
        if not taken:
            return TOO_MANY
        self.slot_task = asyncio.ensure_future(self._keep_slot())
        return None

    async def _keep_slot(self) -> None:
        while True:
            await asyncio.sleep(SLOT_REFRESH_S)
            try:
                await sync_to_async(limits.slot_refresh, thread_sensitive=False)(self.slot_key, self.channel_name,
                                                                                 ttl_s=SLOT_TTL_S)
            except limits.LimiterUnavailable:
                pass  # it lapses later; the stream itself needs Redis too and will close

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
        task = getattr(self, "slot_task", None)
        if task is not None:
            task.cancel()
            try:
                await sync_to_async(limits.slot_release, thread_sensitive=False)(self.slot_key, self.channel_name)
            except limits.LimiterUnavailable:
                pass  # the slot lapses after SLOT_TTL_S

    async def session_ended(self, message):
        """Channel-layer handler ("type": "session.ended"): the learner logged out of this session."""
        await self.close(code=FORBIDDEN)

    async def flush(self) -> None:
        events, finished = await database_sync_to_async(self._read)()
        for event in events:
            if event["seq"] > self.last_seq:
                self.last_seq = event["seq"]
                await self.send_json(event)
        if finished:
            await self.send_json({"type": "end", "seq": self.last_seq})

    def _read(self):
        self.obj.refresh_from_db()
        return self.read_events(self.obj, self.last_seq)

    async def stream_event(self, message):
        """Channel-layer handler ("type": "stream.event"): new events are in the database."""
        await self.flush()

    async def receive_json(self, content, **kwargs):
        # Clients may ask for a re-read (e.g. after a visibility change); nothing else is accepted.
        # At most one re-read per WS_SYNC_INTERVAL_S: each costs database reads, and live events
        # trigger their own, so a sync dropped here loses nothing.
        if isinstance(content, dict) and content.get("type") == "sync":
            now = time.monotonic()
            if now - self.last_sync >= settings.WS_SYNC_INTERVAL_S:
                self.last_sync = now
                await self.flush()


class PingConsumer(EventStreamConsumer):
    def get_object(self, user, pk):
        return get_ping_for_user(user, pk)

    def read_events(self, obj, after):
        return obj.events_after(after), obj.status == obj.Status.SUCCEEDED
