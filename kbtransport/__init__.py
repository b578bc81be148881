"""kbtransport: drives kbproto cores over the network with anyio, h11 and wsproto."""

from __future__ import annotations

from kbtransport.env import AnyioClock as AnyioClock
from kbtransport.env import Clock as Clock
from kbtransport.env import SystemIdSource as SystemIdSource
from kbtransport.errors import ConnectError as ConnectError
from kbtransport.errors import PeerProtocolError as PeerProtocolError
from kbtransport.errors import ReadError as ReadError
from kbtransport.errors import TransportError as TransportError
from kbtransport.errors import TransportTimeout as TransportTimeout
from kbtransport.errors import WriteError as WriteError
from kbtransport.errors import map_exceptions as map_exceptions
from kbtransport.http import FileBody as FileBody
from kbtransport.http import Request as Request
from kbtransport.http import Response as Response
from kbtransport.http import StreamBody as StreamBody
from kbtransport.http import WebSocketAccept as WebSocketAccept
from kbtransport.http import error_response as error_response
from kbtransport.http import json_response as json_response
from kbtransport.http_client import ClientConfig as ClientConfig
from kbtransport.http_client import HttpClient as HttpClient
from kbtransport.http_client import HttpResponse as HttpResponse
from kbtransport.http_server import ServerConfig as ServerConfig
from kbtransport.http_server import serve_http_connection as serve_http_connection
from kbtransport.listener import BoundAddress as BoundAddress
from kbtransport.listener import ListenConfig as ListenConfig
from kbtransport.listener import serve_http as serve_http
from kbtransport.listener import serve_tcp as serve_tcp
from kbtransport.node import NodeHooks as NodeHooks
from kbtransport.ranges import file_response as file_response
from kbtransport.routing import Router as Router
from kbtransport.serve import NodeHandle as NodeHandle
from kbtransport.serve import serve_node as serve_node
from kbtransport.websocket import WebSocketClosed as WebSocketClosed
from kbtransport.websocket import WebSocketLink as WebSocketLink
from kbtransport.websocket import connect_websocket as connect_websocket

__all__ = (
    "AnyioClock",
    "BoundAddress",
    "ClientConfig",
    "Clock",
    "ConnectError",
    "FileBody",
    "HttpClient",
    "HttpResponse",
    "ListenConfig",
    "NodeHandle",
    "NodeHooks",
    "PeerProtocolError",
    "ReadError",
    "Request",
    "Response",
    "Router",
    "ServerConfig",
    "StreamBody",
    "SystemIdSource",
    "TransportError",
    "TransportTimeout",
    "WebSocketAccept",
    "WebSocketClosed",
    "WebSocketLink",
    "WriteError",
    "connect_websocket",
    "error_response",
    "file_response",
    "json_response",
    "map_exceptions",
    "serve_http",
    "serve_http_connection",
    "serve_node",
    "serve_tcp",
)
