"""One network client per event loop, made on first use there.

Clients own sockets, and sockets belong to the event loop that opened them: a
later loop (a second ``asyncio.run``, a restarted server, a test client used
twice) must not reuse them. So a client is made in the loop that first asks for
one, and replaced when another loop asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class _Closable(Protocol):
    def aclose(self) -> Awaitable[None]: ...


Client = TypeVar("Client", bound=_Closable)


class PerLoop(Generic[Client]):
    """The client of the running loop, made by *make* when that loop first asks."""

    def __init__(self, make: Callable[[], Client]) -> None:
        self._make = make
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Client:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client of an earlier loop is dropped, not closed: it cannot be closed
            # from this loop, and its sockets close when it is garbage collected.
            self._client = self._make()
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the client if the running loop made it; a later :meth:`get` makes another."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
