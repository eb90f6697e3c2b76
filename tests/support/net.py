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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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
