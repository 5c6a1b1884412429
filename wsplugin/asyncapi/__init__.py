"""The AsyncAPI document of the managed endpoint (``{prefix}-asyncapi.json``) and its page
(``{prefix}-docs``), built from the room table: see docs/rooms.md."""
