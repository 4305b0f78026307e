"""Run the emulator: in the foreground (`batchflow emulator`) or in a thread (tests)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

from ..errors import BatchflowError
from .app import Emulator
from .faults import Faults
from .store import Store


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BatchflowError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another --port, or 0 for a free one"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    speed: float = 1.0,
    data_dir: Path | None = None,
    faults: Faults | None = None,
    gcs_endpoint: str | None = None,
) -> None:
    """Serve until interrupted; print `listening on URL` once requests are accepted."""
    store = Store(data_dir, speed=speed, faults=faults, gcs_endpoint=gcs_endpoint)
    sock = _bind(host, port)
    url = _url(sock)

    @asynccontextmanager
    async def announce(app):
        print(f"listening on {url}", flush=True)
        yield

    emulator = Emulator(store, api_key=api_key, lifespan=announce)
    config = uvicorn.Config(emulator.app, log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()
        sys.stdout.flush()


class EmulatorServer:
    """The emulator on a free port in a background thread; `url` is its base URL.

    with EmulatorServer(speed=100_000) as emu:
        client = genai.Client(api_key="k", http_options={"base_url": emu.url})
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        speed: float = 1.0,
        data_dir: Path | None = None,
        faults: Faults | None = None,
        gcs_endpoint: str | None = None,
    ) -> None:
        self.store = Store(data_dir, speed=speed, faults=faults, gcs_endpoint=gcs_endpoint)
        self.emulator = Emulator(self.store, api_key=api_key)
        self._sock = _bind(host, port)
        self.url = _url(self._sock)
        config = uvicorn.Config(self.emulator.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> EmulatorServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
        self.store.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
