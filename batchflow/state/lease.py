"""Leased locks: one apply acts on a pipeline at a time, and a dead one's lock heals by itself.

The lock file holds a lease: who holds it (a random token, host, pid), since
when, and until when. While apply runs, a heartbeat thread renews it every
third of the lease's length. A lease that expired is taken over by the next
apply, from any host, with a conditional write that only one contender can
win; a holder on this host whose process is gone is taken over at once. A
holder that failed to renew (a paused VM, a lost network) learns it at its
next state write and stops (`Held.check`); in buckets the state write itself is
also conditional (see RemoteStore).

A state write is not the only thing a stale holder could do twice: a create,
upload, cancel or delete on the service costs money or loses work, and cannot
be fenced by the service. So before each of those the holder confirms its lease
with a fenced write of the lock (`Held.confirm`): renewed over the version it
last wrote, which fails once another apply has taken the lock over. The call
then starts with a whole lease ahead of it, a margin no pause short of the TTL
can eat.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ..errors import LockedError, StateError
from .atomic import process_alive
from .conditional import Conflict, Version

# What a lease's times are read on: the wall clock, shared by every host (a lease written on one
# runner is judged on another). Tests put a clock of their own here to run leases out at once.
clock: Callable[[], float] = time.time


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Lease:
    owner: str  # a random token: the holder's identity, whatever host and pid say
    host: str
    pid: int
    acquired: str
    expires: float  # seconds since the epoch

    @classmethod
    def new(cls, ttl: float) -> Lease:
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), _iso(clock()), clock() + ttl)

    def renewed(self, ttl: float) -> Lease:
        return Lease(self.owner, self.host, self.pid, self.acquired, clock() + ttl)

    def encode(self) -> bytes:
        return json.dumps({**asdict(self), "expires_at": _iso(self.expires)}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Lease | None:
        try:
            doc = json.loads(data)
            return cls(
                str(doc["owner"]), str(doc["host"]), int(doc["pid"]), str(doc["acquired"]), doc["expires"]
            )
        except (ValueError, KeyError, TypeError):
            return None  # a lock of batchflow 0.1 (no lease), or one being written

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.acquired}, lease until {_iso(self.expires)}"


class Held:
    """A lease this process holds, renewed in the background until released."""

    def __init__(self, lock, lease: Lease, version: Version, ttl: float) -> None:
        self.lock, self.lease, self.version, self.ttl = lock, lease, version, ttl
        self.lost: str | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="batchflow-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self.renew()

    def renew(self) -> None:
        with self._mutex:
            try:
                self._renew()
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next beat
                if clock() > self.lease.expires:
                    self.lost = f"this apply could not renew its lease on {self.lock.where} in time"

    def _renew(self) -> None:
        if self.lost:
            return
        lease = self.lease.renewed(self.ttl)
        try:
            self.version, self.lease = self.lock.replace(lease.encode(), self.version), lease
        except Conflict:
            self.lost = f"this apply lost its lock on {self.lock.where} (its lease ran out; another took it)"

    def confirm(self) -> None:
        """Renew the lease now, fenced, or raise: called right before each side effect on the
        service, so a holder paused past its lease (and taken over) never acts on it again."""
        with self._mutex:
            try:
                self._renew()
            except Exception as exc:  # noqa: BLE001 - unconfirmed means: do not act
                raise StateError(
                    f"this apply could not confirm its lease on {self.lock.where} ({exc}); "
                    "stopping before calling the service"
                ) from None
        self.check()

    def check(self) -> None:
        """Raise if the lease was lost: nothing may be written for the pipeline any more."""
        if self.lost or clock() > self.lease.expires:
            raise StateError(self.lost or f"this apply's lease on {self.lock.where} expired; stopping")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._mutex:
            if not self.lost:
                self.lock.delete(self.version)


def acquire(
    pipeline: str,
    lock,
    *,
    ttl: float,
    timeout: float = 0.0,
    say: Callable[[str], None] = lambda message: None,
) -> Held:
    """Take the pipeline's lock, waiting up to `timeout` seconds for a live holder."""
    deadline = time.monotonic() + timeout
    vanished = 0
    while True:
        lease = Lease.new(ttl)
        try:
            return Held(lock, lease, lock.create(lease.encode()), ttl)
        except Conflict:
            pass
        found = lock.read()
        if found is None:  # released in between: try again
            vanished += 1
            if vanished > 20:
                raise StateError(f"{lock.where}: cannot be created, yet cannot be read either")
            time.sleep(0.05)
            continue
        data, version = found
        holder = Lease.decode(data)
        why = _stale(holder, data)
        if why is not None:
            try:
                held = Held(lock, lease, lock.replace(lease.encode(), version), ttl)
            except Conflict:
                continue  # another contender took it first, or the holder renewed
            say(f"took over the lock: {why}")
            return held
        if time.monotonic() >= deadline:
            if holder is not None:
                # A live lease: its holder is at work, or gone and the lease runs out by itself.
                # Removing it by hand is how two applies end up acting at once.
                raise LockedError(
                    f"pipeline {pipeline!r} is locked by another apply ({holder.describe()}); it is "
                    "taken over when that apply ends or its lease runs out: wait with --lock-timeout "
                    f"(lock: {lock.where})"
                )
            old = _old_lock(data) or {}
            raise LockedError(  # a lock of batchflow 0.1, with no lease to run out
                f"pipeline {pipeline!r} is locked by another apply (pid {old.get('pid')} on "
                f"{old.get('host')}, no lease); wait for it (--lock-timeout), or run `batchflow unlock` "
                f"if it is gone (lock: {lock.where})"
            )
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic()), ttl / 3))


def _stale(holder: Lease | None, data: bytes) -> str | None:
    """Why the holder's lock may be taken over now; None while it holds it."""
    if holder is None:
        old = _old_lock(data)
        if old and old.get("host") == socket.gethostname() and not process_alive(old.get("pid")):
            return f"pid {old.get('pid')} on this host, which held it, is gone"
        return None
    if clock() > holder.expires:
        return f"the lease of {holder.describe()} expired"
    if holder.host == socket.gethostname() and not process_alive(holder.pid):
        return f"pid {holder.pid} on this host, which held it, is gone"
    return None


def _old_lock(data: bytes) -> dict | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
