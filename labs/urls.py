from django.urls import path

from labs import views

app_name = "labs"

# Fixed segments come before <slug:>; the catalog refuses lab slugs that collide with them.
urlpatterns = [
    path("", views.lab_list, name="list"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/results/", views.run_results, name="results"),
    path("runs/<int:pk>/cancel/", views.run_cancel_view, name="cancel"),
    path("runs/<int:pk>/clone/", views.run_clone, name="clone"),
    path("runs/<int:pk>/download/", views.run_download, name="download"),
    path("runs/<int:pk>/gguf/", views.run_gguf, name="gguf"),
    path("runs/<int:pk>/gguf/<slug:quant>.zip", views.run_gguf_download, name="gguf_download"),
    path("groups/<int:pk>/", views.group_detail, name="group"),
    path("compare/", views.compare, name="compare"),
    path("<slug:slug>/", views.lab_detail, name="lab"),
    path("<slug:slug>/launch/", views.launch, name="launch"),
]
