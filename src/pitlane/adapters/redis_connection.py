"""The connection class pitlane's Redis clients use on plain TCP.

Apart from the store, so that the store compiles (mypyc refuses a subclass of
redis-py's connection, whose base brings `__slots__` it cannot extend).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection


class HiredisPackingConnection(Connection):
    """An asyncio connection that packs commands in C with hiredis.

    redis-py's asyncio client packs every argument in Python, about a microsecond
    each; a batch sends thousands (its keys, twice), which made packing the largest
    part of the client's cost. hiredis produces the same bytes (a unit test compares).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        # redis-py's own pass over every argument (for bytearrays and memoryviews, which
        # pitlane never sends) cost 1.4 % of the handler's instructions: hiredis is tried
        # first, and redis-py's packer converts or rejects what hiredis refused.
        command = args[0]
        words = args
        if b" " in command if isinstance(command, bytes) else " " in command:
            words = (*command.split(), *args[1:])  # "SCRIPT LOAD" is two words on the wire
        try:
            return [hiredis.pack_command(words)]
        except TypeError:
            return super().pack_command(*args)
