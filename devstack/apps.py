from django.apps import AppConfig


class DevstackConfig(AppConfig):
    """The tooling's management commands: demo, chaos, bench, run_partners."""

    name = "devstack"
    verbose_name = "dualsend development tooling"
