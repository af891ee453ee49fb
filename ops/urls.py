from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from ops import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page links; send them to the real icon.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("ops/diagnostics/", views.diagnostics, name="diagnostics"),
    path("ops/ping/", views.ping_start, name="ping-start"),
    path("ops/ping/<int:pk>/", views.ping_detail, name="ping-detail"),
]
