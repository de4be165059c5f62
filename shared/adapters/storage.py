"""The S3 adapter: MinIO's client, run in a small thread pool so the loop never blocks."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.lifecycleconfig import LifecycleConfig

from shared.errors import ErrorCode, PermanentError, TransientError, WriteConflict
from shared.settings import Settings

T = TypeVar("T")

_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NotFound"}
_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccountProblem",
    "InvalidBucketName",
    "InvalidObjectName",
    "KeyTooLongError",
}
"""S3 errors no retry can cure: the request is refused as such (a permission, a name)."""


PUT_PART_BYTES = 16 * 1024 * 1024
"""The client reads a file in parts of this size into memory: a file up to it is stored in one
PUT, where the client's own choice (5 MiB) made a multipart upload of a 6 MiB result: three
requests more. At most one part per S3 thread (16) is in memory at once."""


THREADS = 16
"""The S3 client's threads, and so its requests in flight, per process."""


class ObjectNotFound(KeyError):
    """The key does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    metadata: dict[str, str]
    last_modified: datetime | None = None


class ObjectStore(Protocol):
    """The object operations the job records, listing, quota and retention need (through
    `JobStore.storage`): `Storage` over S3, and an in-memory fake in the fast tests
    (tests/fakes.py)."""

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = ..., bucket: str | None = None
    ) -> None: ...

    async def put_json(self, key: str, obj: Any) -> None: ...

    async def put_versioned(
        self, key: str, data: bytes, if_match: str | None = None, *, if_absent: bool = False
    ) -> str:
        """Store JSON `data` at `key` and return its new ETag; with `if_match`, only if the
        object is still at that ETag (WriteConflict if not, ObjectNotFound if there is none);
        with `if_absent`, only if there is no object at `key` (WriteConflict if there is)."""
        ...

    async def get_bytes(self, key: str, bucket: str | None = None) -> bytes:
        """The object's bytes; ObjectNotFound when there is none."""
        ...

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its ETag, in one GET; ObjectNotFound when there is none."""
        ...

    async def get_json(self, key: str) -> Any: ...

    async def stat(self, key: str, bucket: str | None = None) -> ObjectInfo: ...

    async def delete(self, key: str) -> None: ...

    async def list_objects(self, prefix: str) -> list[ObjectInfo]: ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def list_after(self, prefix: str, start_after: str | None, limit: int) -> list[str]: ...

    async def list_prefixes(self, prefix: str) -> list[str]: ...

    async def get_lifecycle(self) -> LifecycleConfig | None: ...

    async def set_lifecycle(self, config: LifecycleConfig) -> None: ...


class Storage:
    """Async facade over one MinIO client and one bucket."""

    def __init__(self, settings: Settings, endpoint: str, threads: int = THREADS) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint
        self.bucket = settings.s3_bucket
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="s3")
        self._http = urllib3.PoolManager(
            maxsize=threads,
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        self.client = Minio(
            parts.netloc,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=parts.scheme == "https",
            region=settings.s3_region,
            http_client=self._http,
        )

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise ObjectNotFound(args[1] if len(args) > 1 else "") from exc
            if exc.code == "PreconditionFailed":
                raise WriteConflict("the object changed since it was read") from exc
            if exc.code in _DENIED:
                bucket = args[0] if args and isinstance(args[0], str) else self.bucket
                if bucket != self.bucket:  # a caller's source bucket: the caller's problem
                    raise PermanentError(
                        f"the source bucket refused the request: {exc.code}",
                        ErrorCode.SOURCE_UNREACHABLE,
                    ) from exc
                raise PermanentError(f"storage refused the request: {exc.code}") from exc
            raise TransientError(f"storage error: {exc.code}") from exc
        except (ServerError, InvalidResponseError) as exc:
            raise TransientError(f"storage answered an error: {type(exc).__name__}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError("storage is unreachable") from exc

    async def ensure_bucket(self) -> None:
        if not await self._run(self.client.bucket_exists, self.bucket):
            try:
                await self._run(self.client.make_bucket, self.bucket)
            except TransientError as exc:
                # Another process may have created it between the check and the call.
                if not await self._run(self.client.bucket_exists, self.bucket):
                    raise exc

    async def ping(self) -> None:
        await self._run(self.client.bucket_exists, self.bucket)

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        bucket: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """`metadata`: user metadata (`x-amz-meta-<name>`), ASCII values."""
        await self._run(
            self.client.put_object,
            bucket or self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=metadata,
            part_size=PUT_PART_BYTES,
        )

    async def put_json(self, key: str, obj: Any) -> None:
        await self.put_bytes(key, json.dumps(obj, separators=(",", ":")).encode())

    async def put_versioned(
        self, key: str, data: bytes, if_match: str | None = None, *, if_absent: bool = False
    ) -> str:
        """Store JSON `data` at `key` and return its new ETag; with `if_match`, only if the
        object is still at that ETag; with `if_absent`, only if there is none. The server checks
        and writes at once (S3, MinIO and the test server honour `If-Match` and
        `If-None-Match: *` on PutObject), so of two writers that saw one state exactly one
        succeeds.

        Raises:
            WriteConflict: the object is at another ETag, or exists (with `if_absent`).
            ObjectNotFound: there is no object at `key` (with `if_match`).
        """
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        if if_absent:
            headers["If-None-Match"] = "*"

        def put(bucket_name: str, object_key: str) -> str:
            # put_object would send If-Match as user metadata (x-amz-meta-if-match).
            result = self.client._put_object(bucket_name, object_key, data, headers=headers)
            return _etag(result.etag)

        return await self._run(put, self.bucket, key)

    async def put_file(
        self, key: str, path: str, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        """The file in one PUT up to `PUT_PART_BYTES`, else a multipart upload of such parts."""
        await self._run(
            self.client.fput_object,
            self.bucket,
            key,
            path,
            content_type=content_type,
            metadata=metadata,
            part_size=PUT_PART_BYTES,
        )

    async def get_bytes(self, key: str, bucket: str | None = None) -> bytes:
        def read(bucket_name: str, object_key: str) -> bytes:
            resp = self.client.get_object(bucket_name, object_key)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        return await self._run(read, bucket or self.bucket, key)

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        def read(bucket_name: str, object_key: str) -> tuple[bytes, str]:
            resp = self.client.get_object(bucket_name, object_key)
            try:
                return bytes(resp.read()), _etag(resp.headers.get("etag"))
            finally:
                resp.close()
                resp.release_conn()

        return await self._run(read, self.bucket, key)

    async def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str]]:
        """The object and its user metadata (names without `x-amz-meta-`), in one GET."""

        def read(bucket_name: str, object_key: str) -> tuple[bytes, dict[str, str]]:
            resp = self.client.get_object(bucket_name, object_key)
            try:
                return bytes(resp.read()), user_metadata(resp.headers)
            finally:
                resp.close()
                resp.release_conn()

        return await self._run(read, self.bucket, key)

    async def get_json(self, key: str) -> Any:
        return json.loads(await self.get_bytes(key))

    async def download(self, key: str, path: str, bucket: str | None = None) -> None:
        """`key` into the file `path`: one GET, streamed (no HEAD first, unlike fget_object)."""

        def fetch(bucket_name: str, object_key: str) -> None:
            resp = self.client.get_object(bucket_name, object_key)
            try:
                with open(path, "wb") as fh:
                    for chunk in resp.stream(1 << 20):
                        fh.write(chunk)
            finally:
                resp.close()
                resp.release_conn()

        await self._run(fetch, bucket or self.bucket, key)

    async def stat(self, key: str, bucket: str | None = None) -> ObjectInfo:
        st = await self._run(self.client.stat_object, bucket or self.bucket, key)
        meta = {k.lower(): str(v) for k, v in (st.metadata or {}).items()}
        return ObjectInfo(key=key, size=int(st.size or 0), etag=str(st.etag), metadata=meta)

    async def stream(self, key: str, chunk: int = 64 * 1024) -> ObjectStream:
        """Open `key` for reading: `read_chunk` until None, and `close_stream` in any case."""
        resp = await self._run(self.client.get_object, self.bucket, key)
        return ObjectStream(resp, chunk)

    async def read_chunk(self, it: ObjectStream) -> bytes | None:
        return await self._run(next, it, None)

    async def close_stream(self, it: ObjectStream) -> None:
        """Release the stream's connection (also when it was never read, or not to its end)."""
        await asyncio.get_running_loop().run_in_executor(self._pool, it.close)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        def listing() -> list[ObjectInfo]:
            return [
                ObjectInfo(
                    key=str(o.object_name),
                    size=int(o.size or 0),
                    etag=str(o.etag),
                    metadata={},
                    last_modified=o.last_modified,
                )
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ]

        return await self._run(listing)

    async def list_in(self, bucket: str, prefix: str, limit: int) -> list[ObjectInfo]:
        """At most `limit` objects under `prefix` of `bucket` (a caller's source bucket), in key
        order; ObjectNotFound when there is no such bucket."""

        def listing(bucket_name: str, key_prefix: str) -> list[ObjectInfo]:
            found = self.client.list_objects(bucket_name, prefix=key_prefix, recursive=True)
            return [
                ObjectInfo(key=str(o.object_name), size=int(o.size or 0), etag="", metadata={})
                for o in itertools.islice(found, limit)
                if not o.is_dir
            ]

        return await self._run(listing, bucket, prefix)

    async def list_after(self, prefix: str, start_after: str | None, limit: int) -> list[str]:
        """At most `limit` keys under `prefix` that sort after `start_after`, in key order."""

        def listing() -> list[str]:
            found = self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, start_after=start_after
            )
            return [str(o.object_name) for o in itertools.islice(found, limit)]

        return await self._run(listing)

    async def list_prefixes(self, prefix: str) -> list[str]:
        """The "folders" directly under `prefix` (keys up to their next `/`)."""

        def listing() -> list[str]:
            found = self.client.list_objects(self.bucket, prefix=prefix, recursive=False)
            return [str(o.object_name) for o in found if o.is_dir]

        return await self._run(listing)

    async def get_lifecycle(self) -> LifecycleConfig | None:
        return await self._run(self.client.get_bucket_lifecycle, self.bucket)

    async def set_lifecycle(self, config: LifecycleConfig) -> None:
        await self._run(self.client.set_bucket_lifecycle, self.bucket, config)

    async def list_keys(self, prefix: str) -> list[str]:
        return [o.key for o in await self.list_objects(prefix)]

    async def delete(self, key: str) -> None:
        await self._run(self.client.remove_object, self.bucket, key)

    async def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy within the bucket, metadata included; ObjectNotFound: no `src_key`."""
        await self._run(
            self.client.copy_object, self.bucket, dst_key, CopySource(self.bucket, src_key)
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.clear()


def _etag(raw: object) -> str:
    """An ETag without its quotes (as minio's results give it)."""
    return str(raw or "").strip('"')


def user_metadata(headers: Any) -> dict[str, str]:
    """The `x-amz-meta-*` headers of a response, by their lower-case names without the prefix."""
    prefix = "x-amz-meta-"
    return {
        str(k).lower().removeprefix(prefix): str(v)
        for k, v in headers.items()
        if str(k).lower().startswith(prefix)
    }


class ObjectStream:
    """An object's body in chunks; `close()` releases its connection, whether read or not (a
    generator never started would not run its `finally`: the connection leaked when the client
    went away before the first chunk)."""

    def __init__(self, resp: Any, size: int) -> None:
        self._resp = resp
        self._chunks: Iterator[bytes] = resp.stream(size)
        self._closed = False

    def __iter__(self) -> ObjectStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._resp.close()
            self._resp.release_conn()
