"""Everything `make run` prepares after migrating: the question bank, the default model and
what every run of the default lab reuses."""

from django.apps import apps
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from mlcore.registry import DEFAULT_MODEL, load_base


class Command(BaseCommand):
    help = ("Load the question bank and lab catalog, cache the default model's weights under var/ and keep "
            "what the default lab's runs reuse.")

    def add_arguments(self, parser):
        parser.add_argument("--skip-model", action="store_true", help="Do not prepare the default model or its lab cache.")

    def handle(self, *args, skip_model=False, **options):
        if apps.is_installed("quiz") and _has_command("load_bank"):
            call_command("load_bank", stdout=self.stdout)
        if _has_command("load_labs"):
            call_command("load_labs", stdout=self.stdout)
        if not skip_model:
            # The first call dequantizes the bundled GGUF once into var/models; later ones are instant.
            load_base(DEFAULT_MODEL)
            self.stdout.write(f"default model ready: {DEFAULT_MODEL}")
            if _has_command("warm_lab_cache"):  # the default lab's first run then reuses it like every later one
                call_command("warm_lab_cache", stdout=self.stdout)


def _has_command(name: str) -> bool:
    return name in get_commands()
