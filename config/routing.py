"""Websocket routes, collected from the apps that stream."""

from ops.routing import websocket_urlpatterns as ops_ws

websocket_urlpatterns = [*ops_ws]
