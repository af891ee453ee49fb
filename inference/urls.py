from django.urls import path

from inference import api, views

urlpatterns = [
    path("playground/", views.playground, name="playground"),
    path("account/api-tokens/", views.token_create, name="api-token-create"),
    path("account/api-tokens/<int:pk>/revoke/", views.token_revoke, name="api-token-revoke"),
    path("inference/runs/<int:pk>/baselines/", views.run_baselines, name="run-baselines"),
    # Token-authenticated JSON APIs (no cookies, no CSRF): ours, and the OpenAI-compatible one.
    path("api/classify", api.classify, name="api-classify"),
    path("v1/models", api.models, name="v1-models"),
    path("v1/models/<str:model_id>", api.model_detail, name="v1-model"),
    path("v1/chat/completions", api.chat_completions, name="v1-chat-completions"),
]
