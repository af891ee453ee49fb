from labs.access import get_run_for_user
from labs.models import Run
from ops.consumers import EventStreamConsumer


class RunConsumer(EventStreamConsumer):
    """/ws/labs/runs/<pk>/?after=<seq>: a run's numbered events, replayed from the DB, then live."""

    def get_object(self, user, pk):
        run = get_run_for_user(user, pk)  # owner or staff, else Http404 -> closed before accept()
        # Every live notification re-reads the row: skip the big result columns.
        return Run.objects.only("pk", "status", "owner_id").get(pk=run.pk)

    def read_events(self, obj, after):
        # The status is read before the events, and a run reaches its final status in the same
        # transaction as its last event: a finished run has nothing left to send after these.
        return obj.events_after(after), obj.is_finished
