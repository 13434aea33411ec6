"""Where batch jobs read and write: a local folder or an ``s3://bucket/prefix``, one API.

Both go through pyarrow's filesystems (`pyarrow.fs.LocalFileSystem`, `pyarrow.fs.S3FileSystem`),
which Ray Data uses too, so the same code lists, reads and writes on a laptop and on a
cluster, and any S3-compatible store (MinIO, R2, Ceph, moto) works by setting its endpoint.
A `Location` is a root plus relative paths: the manifest and the outputs name files by their
path under SRC and DST, never by absolute paths, so a job can move between machines.

Credentials: keys given explicitly (flags, settings) win; without them pyarrow's own chain
applies (AWS_* variables, ~/.aws files, web identity / IRSA, instance metadata), so keys need
not travel at all where the nodes have them.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, SecretStr

from bgremove.errors import SetupError, UsageError

S3_SCHEME = "s3://"
#: prefix of a local file's temporary while it is written (hidden: folder scans skip names
#: starting with a dot)
TEMP_PREFIX = ".bgremove-"
#: when an endpoint is set without a region: S3-compatible stores accept any region, and
#: without one the AWS SDK would ask AWS where the bucket lives
DEFAULT_ENDPOINT_REGION = "us-east-1"


class S3Config(BaseModel):
    """How to reach S3 (or an S3-compatible store); empty fields: pyarrow's defaults."""

    model_config = ConfigDict(frozen=True)

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem with these settings (path-style, as S3-compatible stores
        expect when an endpoint is set)."""
        kwargs: dict[str, object] = {}
        if self.access_key_id is not None or self.secret_access_key is not None:
            if self.access_key_id is None or self.secret_access_key is None:
                raise UsageError(
                    "S3 credentials need both the access key id and the secret access key",
                    code="s3_credentials",
                )
            kwargs["access_key"] = self.access_key_id.get_secret_value()
            kwargs["secret_key"] = self.secret_access_key.get_secret_value()
            if self.session_token is not None:
                kwargs["session_token"] = self.session_token.get_secret_value()
        region = self.region
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise UsageError(
                    f"invalid S3 endpoint {self.endpoint_url!r}: expected http(s)://host[:port]",
                    code="s3_endpoint",
                )
            kwargs["endpoint_override"] = parsed.netloc
            kwargs["scheme"] = parsed.scheme
            region = region or DEFAULT_ENDPOINT_REGION
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FileEntry:
    """One file under a location: its relative path, size in bytes, modification time (s)."""

    rel: str
    size: int
    mtime: float | None


@dataclass(frozen=True)
class Location:
    """A folder on a filesystem: the root that relative paths are joined to.

    ``fs`` is pickled into Ray tasks (with any explicit keys: Ray Data ships its read
    filesystems the same way).
    """

    uri: str
    fs: pafs.FileSystem
    root: str

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` (a '/'-separated path under the root)."""
        return posixpath.join(self.root, rel) if rel else self.root

    def uri_of(self, rel: str) -> str:
        """``rel`` as the user would write it (for messages and the manifest)."""
        return f"{self.uri.rstrip('/')}/{rel}"

    def exists(self) -> bool:
        """Whether the folder exists (an S3 prefix does when an object lies under it)."""
        try:
            info = self.fs.get_file_info(self.root)
        except OSError as exc:
            raise SetupError(f"cannot reach {self.uri}: {exc}", code="storage") from None
        return info.type != pafs.FileType.NotFound

    def list_files(self, *, exclude: str | None = None) -> Iterator[FileEntry]:
        """Every file under the root, recursively, but hidden ones (a name starting with a dot)
        and those under ``exclude`` (a relative folder)."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise SetupError(f"cannot list {self.uri}: {exc}", code="storage") from None
        prefix = self.root.rstrip("/") + "/"
        skip = exclude.rstrip("/") + "/" if exclude else None
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.startswith(prefix):
                continue
            rel = info.path[len(prefix) :]
            if skip is not None and (rel + "/").startswith(skip):
                continue
            if any(part.startswith(".") for part in rel.split("/")):
                continue  # hidden files and folders, and our own temporary files
            mtime = info.mtime.timestamp() if info.mtime is not None else None
            yield FileEntry(rel, int(info.size or 0), mtime)

    def read(self, rel: str) -> bytes:
        """The whole file (OSError/FileNotFoundError on failure)."""
        with self.fs.open_input_stream(self.path(rel)) as stream:
            return bytes(stream.read())

    def read_optional(self, rel: str) -> bytes | None:
        """The file, or None when it does not exist."""
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.NotFound:
            return None
        return self.read(rel)

    def write(self, rel: str, data: bytes, content_type: str | None = None) -> None:
        """Write the file whole: a reader never sees half of it (an S3 object appears when its
        upload completes; a local file is written beside its name, then renamed). On S3 the
        object gets ``content_type``, so a bucket can serve the results as they are."""
        target = self.path(rel)
        if self.is_s3:
            metadata = {"Content-Type": content_type} if content_type else None
            with self.fs.open_output_stream(target, metadata=metadata) as stream:
                stream.write(data)
            return
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        temp = posixpath.join(posixpath.dirname(target), f"{TEMP_PREFIX}{uuid.uuid4().hex}.tmp")
        try:
            with self.fs.open_output_stream(temp) as stream:
                stream.write(data)
            self.fs.move(temp, target)
        except BaseException:
            if self.fs.get_file_info(temp).is_file:
                self.fs.delete_file(temp)
            raise

    def delete(self, rel: str) -> None:
        """Remove the file if it exists."""
        path = self.path(rel)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            self.fs.delete_file(path)

    def relative_to(self, other: Location) -> str | None:
        """This location's root as a relative folder under ``other``'s, if it lies there on
        the same filesystem (a DST inside SRC must not be read back as input)."""
        if type(self.fs) is not type(other.fs) or self.fs != other.fs:
            return None
        base = other.root.rstrip("/") + "/"
        here = self.root.rstrip("/") + "/"
        return here[len(base) :].rstrip("/") if here.startswith(base) and here != base else None


def open_location(uri: str, s3: S3Config | None = None) -> Location:
    """A `Location` for a local folder or an ``s3://bucket[/prefix]`` URI."""
    text = str(uri).strip()
    if not text:
        raise UsageError("empty location: give a folder or s3://bucket/prefix", code="location")
    if text.startswith(S3_SCHEME):
        root = text[len(S3_SCHEME) :].strip("/")
        if not root or root.startswith("/"):
            raise UsageError(f"invalid S3 location {uri!r}: expected s3://bucket/prefix")
        return Location(text, (s3 or S3Config()).filesystem(), root)
    if "://" in text:
        raise UsageError(
            f"unsupported location {uri!r}: give a local folder or s3://bucket/prefix",
            code="location",
        )
    path = Path(os.path.expanduser(text)).resolve()
    return Location(str(path), pafs.LocalFileSystem(), path.as_posix())
