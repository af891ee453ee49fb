from django.urls import path

from labs.consumers import RunConsumer

websocket_urlpatterns = [
    path("ws/labs/runs/<int:pk>/", RunConsumer.as_asgi()),
]
