"""A free TCP port for a server a test starts on its own.

The port is picked at random below the kernel's ephemeral range (32768 and up on Linux), not
by binding port 0: a port from bind(0) is an ephemeral one, which the kernel may hand to any
outgoing connection (or another bind(0)) in the moment before the test's server binds it, and
the server then fails with "address already in use". Below that range only another test's
random pick can collide.
"""

from __future__ import annotations

import random
import socket

LOWEST, HIGHEST = 20000, 32767


def free_port() -> int:
    while True:
        port = random.randint(LOWEST, HIGHEST)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
