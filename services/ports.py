"""TCP ports for local servers: is one free, and any free one (each worker's web views need their own)."""

from __future__ import annotations

import socket


class PortInUse(ValueError):
    """A configured port is taken: a configuration error, reported once instead of retried forever."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (tests, benchmarks and the demo give each worker its own)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int, setting: str = "STOCKLEDGER_WORKER_WEB_PORT", option: str = "--web-port") -> None:
    """PortInUse (one line naming the option and setting to change) unless host:port can be bound."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(f"port {host}:{port} is in use ({exc.strerror}); choose another with {option} or {setting}") from None
