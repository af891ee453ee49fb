from django.urls import path

from ops.consumers import PingConsumer

websocket_urlpatterns = [
    path("ws/ping/<int:pk>/", PingConsumer.as_asgi()),
]
