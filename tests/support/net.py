"""Loopback sockets for test servers: only 127.0.0.1, and no race for a port."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1, not yet listening.

    Hand it to the server itself (uvicorn's ``sockets=``, ``--fd``): the port is
    held from the start, so nothing else can take it in between. The caller
    closes it.
    """
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on connections accepted
    # from a socket whose proto says TCP, and without it a response written in two
    # parts waits out the client's delayed ACK (40 ms a request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    return sock


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listened on a moment ago.

    For a program that only takes a port number, or as a peer that refuses
    connections. Another process may take it in between: prefer
    :func:`bound_socket` wherever a socket can be handed over.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port
