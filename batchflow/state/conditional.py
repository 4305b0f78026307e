"""Small files written only if they are still what the writer last read.

The lock and, in buckets, `state.json` are written with preconditions: a
version read with the content (GCS generation, S3 ETag; for a local file, its
bytes, compared under an flock) must still be current, or the write is refused
with `Conflict`. That is what makes a lease safe to take over from any host and
lets a holder that lost its lease fail instead of overwriting a newer state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from .atomic import write_atomic

Version = str  # opaque: a generation, an ETag, or (local) the bytes' repr


class Conflict(Exception):
    """The file is not what the writer last read (or already exists, for a create)."""


class LocalFile:
    """A local file; writers on one host (and NFS with working locks) are serialised by an flock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".guard"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            yield

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def read(self) -> tuple[bytes, Version] | None:
        with self._guard():
            data = self._read()
        return None if data is None else (data, repr(data))

    def create(self, data: bytes) -> Version:
        with self._guard():
            if self._read() is not None:
                raise Conflict(self.where)
            write_atomic(self.path, data)
        return repr(data)

    def replace(self, data: bytes, version: Version) -> Version:
        with self._guard():
            current = self._read()
            if current is None or repr(current) != version:
                raise Conflict(self.where)
            write_atomic(self.path, data)
        return repr(data)

    def delete(self, version: Version | None = None) -> None:
        with self._guard():
            current = self._read()
            if current is not None and (version is None or repr(current) == version):
                self.path.unlink()


class BucketObject:
    """An object in GCS (generation preconditions) or S3 (ETag preconditions), through fsspec."""

    def __init__(self, fs, path: str) -> None:
        self.fs, self.path = fs, path
        self.where = fs.unstrip_protocol(path)
        self.gcs = "gs" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        self.bucket, _, self.key = path.partition("/")

    def _version(self) -> Version | None:
        self.fs.invalidate_cache(self.path)  # fsspec caches listings; a version must be current
        try:
            info = self.fs.info(self.path)
        except FileNotFoundError:
            return None
        return str(info["generation"] if self.gcs else info["ETag"]).strip('"')

    def read(self) -> tuple[bytes, Version] | None:
        # Version, content, version again: a write in between makes us read again, so the
        # version returned is surely the content's.
        for _ in range(5):
            before = self._version()
            if before is None:
                return None
            try:
                data = self.fs.cat_file(self.path)
            except FileNotFoundError:
                continue
            if self._version() == before:
                return data, before
        raise Conflict(f"{self.where} keeps changing")

    def create(self, data: bytes) -> Version:
        return self._put(data, None)

    def replace(self, data: bytes, version: Version) -> Version:
        return self._put(data, version)

    def _put(self, data: bytes, version: Version | None) -> Version:
        try:
            if self.gcs:
                # gcsfs's own simple upload, with the precondition it offers only for creates.
                head = (
                    "--==0==\nContent-Type: application/json; charset=UTF-8\n\n"
                    + json.dumps({"name": self.key})
                    + "\n--==0==\nContent-Type: application/octet-stream\n\n"
                )
                answer = self.fs.call(
                    "POST",
                    f"{self.fs._location}/upload/storage/v1/b/{quote(self.bucket)}/o",
                    uploadType="multipart",
                    ifGenerationMatch=version or "0",
                    headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                    data=head.encode() + data + b"\n--==0==--",
                    json_out=True,
                )
                new = str(answer["generation"])
            else:
                match = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
                answer = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=data, **match)
                new = answer["ETag"].strip('"')
        except (FileExistsError, FileNotFoundError) as exc:
            raise Conflict(self.where) from exc
        except OSError as exc:
            if exc.errno == errno.EINVAL or "Precondition" in str(exc):
                raise Conflict(self.where) from exc
            raise
        finally:
            self.fs.invalidate_cache(self.path)
        return new

    def delete(self, version: Version | None = None) -> None:
        """Remove the object if it is still `version` (any version if None)."""
        try:
            if self.gcs and version is not None:
                self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self.key, ifGenerationMatch=version)
            elif version is None or self._version() == version:  # S3: a small window, see lease.py
                self.fs.rm_file(self.path)
        except (FileNotFoundError, FileExistsError):
            pass  # gone, or someone else's now
        finally:
            self.fs.invalidate_cache(self.path)
