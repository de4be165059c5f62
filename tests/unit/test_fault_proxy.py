"""The reliability suite's TCP proxy owns every connection it accepts, also one accepted in the
last moments before it is cut or closed. (On an `asyncio.Server`, such a connection failed an
assertion in `Server._attach` and its half-built transport was left to the garbage collector: the
storage-outage scenario's flaky "ResourceWarning: unclosed transport". Fails with the old proxy at
two loop turns.)"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from tests.reliability.harness import FaultProxy

CLIENTS = 8


async def _close_while_accepting(loop_turns: int) -> list[socket.socket]:
    """Connect clients (the kernel completes the handshakes), let the loop turn `loop_turns`
    times so that some accepts are under way, then close the proxy and end the loop."""
    target = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    proxy = FaultProxy(port)
    await proxy.start()
    clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(CLIENTS)]
    for _ in range(loop_turns):
        await asyncio.sleep(0)  # one turn of the loop, not a wait for something
    await proxy.close()
    target.close()
    for _ in range(3):
        await asyncio.sleep(0)  # the turns in which aborted transports close their sockets
    return clients


@pytest.mark.parametrize("loop_turns", range(8))
def test_a_connection_accepted_as_the_proxy_closes_is_not_leaked(loop_turns: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        clients = asyncio.run(_close_while_accepting(loop_turns))
        gc.collect()
    for client in clients:
        client.close()
    leaked = [str(w.message) for w in caught if "unclosed transport" in str(w.message)]
    assert leaked == [], leaked[0]
