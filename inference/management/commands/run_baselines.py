from django.core.management.base import BaseCommand, CommandError

from inference.baselines import BaselinesBusy, baselines_compute, baselines_launch, comparison
from labs.models import Run


class Command(BaseCommand):
    help = ("Evaluate a run's baselines (fine-tuned, zero-/few-shot with the local base model and through the "
            "LLM API) on its test split, in this process, and store them (BaselineResult rows).")

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, required=True, help="run id")
        parser.add_argument("--k", type=int, default=None,
                            help="examples in the few-shot prompts (default: TUNELAB_BASELINE_SHOTS)")
        parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test examples")

    def handle(self, *args, run, k, limit, **options):
        found = Run.objects.filter(pk=run).first()
        if found is None:
            raise CommandError(f"No run {run}.")
        if found.status != Run.Status.SUCCEEDED:
            raise CommandError(f"Run {run} is {found.status}; baselines need a run that succeeded.")
        if k is not None and not 1 <= k <= 64:
            raise CommandError("--k must be from 1 to 64.")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        try:
            baselines_launch(run=found, k=k, limit=limit, enqueue=False)
        except BaselinesBusy as exc:
            raise CommandError(f"{exc} Wait for it, or reset the rows in the admin.") from None
        self.stdout.write(f"Evaluating the baselines of run {run}…")
        baselines_compute(run_id=found.pk)
        self.stdout.write(format_table(comparison(found)))


def format_table(table: dict) -> str:
    lines = [f"{'method':38} {'status':10} {'macro-F1':>8} {'acc':>6} {'p50 ms':>8} {'p95 ms':>8} {'$/1000':>8}  where"]
    for entry in table["rows"]:
        row = entry["row"]

        def num(value, fmt):
            return format(value, fmt) if value is not None else "—"

        if row is None:
            lines.append(f"{entry['title']:38} {'—':10}")
            continue
        lines.append(
            f"{entry['title'][:38]:38} {row.status:10} {num(row.macro_f1, '8.3f'):>8} {num(row.accuracy, '6.3f'):>6} "
            f"{num(row.latency_p50_ms, '8.1f'):>8} {num(row.latency_p95_ms, '8.1f'):>8} {num(row.cost_per_1000, '8.4f'):>8}  "
            f"{entry['location']}"
        )
        if row.message:
            lines.append(f"    {row.message}")
    return "\n".join(lines)
