"""Addresses and sockets: parse ``HOST:PORT``, find a free loopback port, probe a listener."""

from __future__ import annotations

import errno
import socket

from tvm_mpq.errors import MpqError


def parse_address(text: str, what: str = "address") -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)`` (MpqError naming ``what`` when malformed)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MpqError(f"{what} '{text}' is not HOST:PORT")
    return host.strip("[]"), int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """MpqError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            reason = "in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise MpqError(f"cannot listen on {host}:{port}: {reason}") from None


def probe(host: str, port: int, timeout: float = 5.0, what: str = "RPC server") -> None:
    """MpqError naming ``HOST:PORT`` unless something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        raise MpqError(f"{what} {host}:{port} unreachable: no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise MpqError(f"{what} {host}:{port} unreachable: connection refused") from None
    except OSError as err:
        raise MpqError(f"{what} {host}:{port} unreachable: {err.strerror or err}") from None


def is_listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
