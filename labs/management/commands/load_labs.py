"""Sync the lab catalog (labs/catalog/*.md) into the database. Safe to run again and again."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labs.catalog import CatalogError, load_catalog
from labs.models import Lab


class Command(BaseCommand):
    help = "Load the lab catalog from labs/catalog/*.md; labs whose file is gone are deactivated, not deleted."

    def handle(self, *args, **options):
        try:
            specs = load_catalog()
        except CatalogError as exc:
            raise CommandError(str(exc)) from None
        with transaction.atomic():
            for spec in specs:
                Lab.objects.update_or_create(
                    slug=spec.slug,
                    defaults=dict(
                        title=spec.title, order=spec.order, summary=spec.summary, goal=spec.goal,
                        body_html=spec.body_html, questions=spec.questions, preset=spec.preset,
                        variants=spec.variants, sweep=spec.sweep, quantize=spec.quantize, is_active=True,
                    ),
                )
            # Runs keep pointing at a retired lab, so it is hidden rather than deleted.
            retired = Lab.objects.exclude(slug__in=[spec.slug for spec in specs]).update(is_active=False)
        self.stdout.write(f"labs: {len(specs)} loaded, {retired} retired")
