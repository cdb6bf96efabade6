"""``manage.py run_partners``: run both partner simulators, as ``python -m`` does."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from devstack.simulators import server


class Command(BaseCommand):
    help = "Run the inventory and payment partner simulators until SIGTERM or SIGINT."

    # The simulators share nothing with the project's models or settings.
    requires_system_checks = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        server.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server.settings_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        server.run_from_options(options)
