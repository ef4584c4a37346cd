"""The machine's own limits, measured in the same run, so the broker figures have a scale:
how many bytes per second one TCP connection over loopback carries (Python sending, Python
receiving), how long an fsync of a small write takes on the disk the brokers keep their data on,
how many cores there are and how busy they were.
"""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

from ..runs import scaled
from ..stack.paths import home
from .measure import percentile

CHUNK = 1 << 16


def loopback_mb_per_s(seconds: float | None = None) -> float:
    """MB/s through one 127.0.0.1 TCP connection, 64 KiB writes, for `seconds`."""
    seconds = seconds if seconds is not None else scaled(1.0, 0.3)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = [0]

    def sink():
        conn, _ = server.accept()
        conn.settimeout(5)
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                received[0] += len(data)

    thread = threading.Thread(target=sink, daemon=True, name="loopback-sink")
    thread.start()
    client = socket.create_connection(server.getsockname(), timeout=5)
    chunk = b"\0" * CHUNK
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            client.sendall(chunk)
    finally:
        client.close()
        thread.join(5)
        server.close()
    return received[0] / (time.perf_counter() - start) / 1e6


def fsync_ms(count: int | None = None, size: int = 4096) -> tuple[float, float]:
    """(p50, p99) milliseconds of write(4 KiB) + fsync on the disk that holds the stack's data."""
    count = count if count is not None else scaled(200, 40)
    folder = home()
    folder.mkdir(parents=True, exist_ok=True)
    times = []
    with tempfile.NamedTemporaryFile(dir=folder, prefix="fsync-probe-") as handle:
        block = b"\0" * size
        for _ in range(count):
            start = time.perf_counter()
            handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
            times.append((time.perf_counter() - start) * 1000)
    return percentile(times, 50), percentile(times, 99)


def describe() -> dict:
    p50, p99 = fsync_ms()
    return {"cores": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
            "loopback_mb_per_s": loopback_mb_per_s(), "fsync_p50_ms": p50, "fsync_p99_ms": p99,
            "data_folder": str(home())}
