from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from accounts import throttle


def client_address(request) -> str:
    """The client's address as the ASGI server saw it (behind a proxy, run Daphne with
    --proxy-headers so this is the visitor's address, not the proxy's)."""
    return (request.META.get("REMOTE_ADDR") or "") if request is not None else ""


class ThrottledLoginMixin:
    """Refuse before checking the password once the account or the address has failed too often."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        refused = throttle.refusal(username, address)
        if refused:
            raise forms.ValidationError(refused, code="throttled")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            throttle.record_failure(username, address)
            raise
        throttle.record_success(username)
        return cleaned


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
