from django.urls import path

from ops import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("ops/diagnostics/", views.diagnostics, name="diagnostics"),
    path("ops/ping/", views.ping_start, name="ping-start"),
    path("ops/ping/<int:pk>/", views.ping_detail, name="ping-detail"),
]
