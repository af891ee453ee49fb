from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("ops.urls")),
    path("accounts/", include("accounts.urls")),
    path("labs/", include("labs.urls")),
    path("admin/", admin.site.urls),
    path("quiz/", include("quiz.urls")),
    path("", include("inference.urls")),
]
