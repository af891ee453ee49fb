from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        # Imported here, not at the top: they load models, which exist only once the app registry is ready.
        from django.contrib import admin

        from accounts.forms import AdminLoginForm
        from accounts.roles import ensure_roles
        from ops.consumers import close_streams_on_logout

        # The admin's login page is throttled like the site's (accounts.throttle).
        admin.site.login_form = AdminLoginForm
        # Logging out closes the session's live streams: a socket outliving its login would
        # keep streaming a learner's runs to whoever uses the browser next.
        user_logged_out.connect(close_streams_on_logout, dispatch_uid="accounts.close_streams")
        # The Curators role (accounts.roles), after every migrate.
        post_migrate.connect(ensure_roles, dispatch_uid="accounts.ensure_roles")

