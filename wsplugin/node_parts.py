"""What the features on top of delivery (history, presence) read of the manager.

The manager satisfies :class:`NodeParts`; a feature's own owner Protocol extends it with the
calls it makes, so none of them imports the manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wsplugin.backends.base import Broker
    from wsplugin.config import Settings
    from wsplugin.counters import Counters, Tally
    from wsplugin.delivery.connection import Connection
    from wsplugin.delivery.hub import Hub
    from wsplugin.events import EventBus
    from wsplugin.rooms.table import RoomTable


class NodeParts(Protocol):
    """The node's settings, local rooms, broker, events, counters and room options."""

    @property
    def settings(self) -> Settings: ...

    @property
    def hub(self) -> Hub[Connection]: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def tally(self) -> Tally: ...

    @property
    def room_table(self) -> RoomTable: ...
