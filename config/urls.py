from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("ops.urls")),
    path("accounts/", include("accounts.urls")),
    path("quiz/", include("quiz.urls")),
    path("admin/", admin.site.urls),
]
