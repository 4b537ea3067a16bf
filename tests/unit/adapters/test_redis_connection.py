"""The C command packer sends the bytes redis-py's own packer would."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from pitlane.adapters.redis_connection import HiredisPackingConnection

COMMANDS: list[tuple[Any, ...]] = [
    ("MGET", "pitlane:cust:{C1}:profile", "pitlane:veh:{V1}:state"),
    ("EVALSHA", "ab" * 20, 2, "k1", "k2", 7, b"", b'3|{"kind":"customer"}', "1,0"),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", "pitlane"),
    ("SET", "k", "é ünïcode", "EX", 30),
    ("ZADD", "pitlane:timers:{3}", "1795462164.902", "customer:C1"),
    ("SET", "k", 1.5),
    ("SET", bytearray(b"k"), memoryview(b"v")),  # what hiredis refuses, converted
]


@pytest.mark.parametrize("command", COMMANDS)
def test_packs_the_same_bytes_as_redis_py(command: tuple[Any, ...]) -> None:
    python_packed = b"".join(Connection().pack_command(*command))

    assert b"".join(HiredisPackingConnection().pack_command(*command)) == python_packed


def test_an_unpackable_argument_is_a_data_error() -> None:
    with pytest.raises(DataError):
        HiredisPackingConnection().pack_command("SET", "k", None)
