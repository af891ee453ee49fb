"""Everything `make run` prepares after migrating: the question bank and the default model."""

from django.apps import apps
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from mlcore.registry import DEFAULT_MODEL, load_base


class Command(BaseCommand):
    help = "Load the question bank and lab catalog, and cache the default model's weights under var/."

    def add_arguments(self, parser):
        parser.add_argument("--skip-model", action="store_true", help="Do not prepare the default model.")

    def handle(self, *args, skip_model=False, **options):
        if apps.is_installed("quiz") and _has_command("load_bank"):
            call_command("load_bank", stdout=self.stdout)
        if _has_command("load_labs"):
            call_command("load_labs", stdout=self.stdout)
        if not skip_model:
            # The first call dequantizes the bundled GGUF once into var/models; later ones are instant.
            load_base(DEFAULT_MODEL)
            self.stdout.write(f"default model ready: {DEFAULT_MODEL}")


def _has_command(name: str) -> bool:
    return name in get_commands()
