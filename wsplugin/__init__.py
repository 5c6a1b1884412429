"""wsplugin: one call turns a FastAPI/Starlette app into a production WebSocket server."""

from wsplugin.auth.jwt_auth import JWTAuth  # PyJWT itself is imported by JWTAuth(...)
from wsplugin.backends import Broker, BrokerError
from wsplugin.config import Settings
from wsplugin.delivery.connection import Connection
from wsplugin.dependencies import WSManager, get_ws_manager
from wsplugin.endpoint.user_route import UserConnection
from wsplugin.events import Event, EventBus
from wsplugin.history import History, HistoryMessage, HistoryPage, NoHistory, Position
from wsplugin.info import ConnectionInfo
from wsplugin.install import install_ws_manager
from wsplugin.manager import WebSocketManager
from wsplugin.presence import Presence, PresenceStats, UserPresence
from wsplugin.protocol import CloseCode
from wsplugin.rooms import RoomOptions
from wsplugin.users import User, UserLimitReached

__all__ = [
    "Broker",
    "BrokerError",
    "CloseCode",
    "Connection",
    "ConnectionInfo",
    "Event",
    "EventBus",
    "History",
    "HistoryMessage",
    "HistoryPage",
    "JWTAuth",
    "NoHistory",
    "Position",
    "Presence",
    "PresenceStats",
    "RoomOptions",
    "Settings",
    "User",
    "UserConnection",
    "UserLimitReached",
    "UserPresence",
    "WSManager",
    "WebSocketManager",
    "get_ws_manager",
    "install_ws_manager",
]

__version__ = "0.1.0"
