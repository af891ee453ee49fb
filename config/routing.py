"""Websocket routes, collected from the apps that stream."""

from labs.routing import websocket_urlpatterns as labs_ws
from ops.routing import websocket_urlpatterns as ops_ws

websocket_urlpatterns = [*ops_ws, *labs_ws]
