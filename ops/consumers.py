"""Websocket consumers that stream numbered events of one owned object.

The protocol is the same for every stream: connect with `?after=<last seq seen>`, receive every
later event from the database in order, then live ones. Live messages only say "new events
exist"; the consumer always reads them from the database, so the browser sees no gap and no
duplicate whatever the channel layer drops or reorders.
"""

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.http import Http404

from ops.access import get_ping_for_user

FORBIDDEN = 4403  # close code for a refused stream (4000-4999 are the application's own)


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
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.last_seq = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            self.last_seq = 0
        self.group = self.group_for(self.obj)
        # Join before replaying: an event written during the replay still triggers a read.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.flush()

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

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
        if content.get("type") == "sync":
            await self.flush()


class PingConsumer(EventStreamConsumer):
    def get_object(self, user, pk):
        return get_ping_for_user(user, pk)

    def read_events(self, obj, after):
        return obj.events_after(after), obj.status == obj.Status.SUCCEEDED
