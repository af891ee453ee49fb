from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_migrate

from accounts.roles import ensure_roles


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from django.contrib import admin

        from accounts.forms import AdminLoginForm

        # The admin's login page is throttled like the site's (accounts.throttle).
        admin.site.login_form = AdminLoginForm
        # Logging out closes the session's live streams: a socket outliving its login would
        # keep streaming a learner's runs to whoever uses the browser next.
        user_logged_out.connect(_close_streams, dispatch_uid="accounts.close_streams")
        # The Curators role (accounts.roles), after every migrate.
        post_migrate.connect(ensure_roles, dispatch_uid="accounts.ensure_roles")


def _close_streams(sender, request, user, **kwargs):
    from ops.consumers import end_session_streams  # (imports models: not before the app registry is ready)

    end_session_streams(getattr(getattr(request, "session", None), "session_key", None))
