"""S3 bucket notifications, as MinIO's AMQP target and AWS S3 send them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

HANDLED_EVENTS = frozenset(
    {"ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy"}
)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class S3Bucket(_Loose):
    name: str


class S3Object(_Loose):
    key: str
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")


class S3Entity(_Loose):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Loose):
    event_name: str = Field(alias="eventName")
    s3: S3Entity


class S3Notification(_Loose):
    """MinIO's message (`EventName`, `Key`, `Records`) or AWS's (`Records`)."""

    event_name: str | None = Field(default=None, alias="EventName")
    key: str | None = Field(default=None, alias="Key")
    records: tuple[S3Record, ...] = Field(default=(), alias="Records")


@dataclass(frozen=True)
class CreatedObject:
    bucket: str
    key: str
    """Decoded as S3 does (`unquote_plus`)."""
    version: str
    """ETag or version id: a new upload under the same name is a new version."""


def created_objects(note: S3Notification, bucket: str, prefix: str) -> list[CreatedObject]:
    """The objects this notification reports as created in `bucket` under `prefix`."""
    found: list[CreatedObject] = []
    for record in note.records:
        event = record.event_name.removeprefix("s3:")
        if event not in HANDLED_EVENTS or record.s3.bucket.name != bucket:
            continue
        key = unquote_plus(record.s3.object.key)
        if not key.startswith(prefix) or key.endswith("/"):
            continue
        obj = record.s3.object
        version = obj.version_id or (obj.etag or "").strip('"') or str(obj.size)
        found.append(CreatedObject(bucket=bucket, key=key, version=version))
    return found
