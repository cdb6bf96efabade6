from django.apps import AppConfig


class DualsendConfig(AppConfig):
    name = "dualsend_app"
    verbose_name = "dualsend"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .log_context import connect_request_signals

        # Each web request starts and ends with no order in the log context.
        connect_request_signals()
