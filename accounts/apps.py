from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from django.contrib import admin

        from accounts.forms import AdminLoginForm

        # The admin's login page is throttled like the site's (accounts.throttle).
        admin.site.login_form = AdminLoginForm
