"""In-memory fakes of the adapters' protocols, for fast tests beside the real-service ones."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Unpack, cast

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from minio.lifecycleconfig import LifecycleConfig

from shared.adapters.broker import Body, MessageProperties
from shared.adapters.storage import ObjectInfo, ObjectNotFound, Storage
from shared.adapters.topology import topology_for
from shared.errors import NotRoutable, WriteConflict
from shared.jobs.records import JobStore
from shared.models import WebhookDelivery
from shared.runtime.context import Context, DoorAnnouncements
from shared.settings import Settings


class InMemoryStore:
    """`shared.adapters.storage.ObjectStore` over a dict, with S3's semantics where the records
    rely on them: a missing key is ObjectNotFound, deleting one is not an error."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str | None, str], tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str]] = []
        """(operation, key) of every call, in order: what a test can count."""
        self.lifecycle: LifecycleConfig | None = None

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        bucket: str | None = None,
    ) -> None:
        self.requests.append(("put", key))
        self.objects[(bucket, key)] = (bytes(data), content_type)

    async def put_json(self, key: str, obj: Any) -> None:
        await self.put_bytes(key, json.dumps(obj, separators=(",", ":")).encode())

    async def put_versioned(
        self, key: str, data: bytes, if_match: str | None = None, *, if_absent: bool = False
    ) -> str:
        self.requests.append(("put", key))
        if if_absent and (None, key) in self.objects:
            raise WriteConflict("the object exists")
        if if_match is not None:
            held = self.objects.get((None, key))
            if held is None:
                raise ObjectNotFound(key)
            if hashlib.md5(held[0]).hexdigest() != if_match:
                raise WriteConflict("the object changed since it was read")
        self.objects[(None, key)] = (bytes(data), "application/json")
        return hashlib.md5(data).hexdigest()

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = await self.get_bytes(key)
        return data, hashlib.md5(data).hexdigest()

    async def get_bytes(self, key: str, bucket: str | None = None) -> bytes:
        self.requests.append(("get", key))
        try:
            return self.objects[(bucket, key)][0]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def get_json(self, key: str) -> Any:
        return json.loads(await self.get_bytes(key))

    async def stat(self, key: str, bucket: str | None = None) -> ObjectInfo:
        self.requests.append(("head", key))
        try:
            data, _ctype = self.objects[(bucket, key)]
        except KeyError:
            raise ObjectNotFound(key) from None
        return ObjectInfo(key=key, size=len(data), etag=hashlib.md5(data).hexdigest(), metadata={})

    async def delete(self, key: str) -> None:
        self.requests.append(("delete", key))
        self.objects.pop((None, key), None)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        self.requests.append(("list", prefix))
        return [
            ObjectInfo(key=k, size=len(v[0]), etag=hashlib.md5(v[0]).hexdigest(), metadata={})
            for (b, k), v in sorted(self.objects.items(), key=lambda kv: kv[0][1])
            if b is None and k.startswith(prefix)
        ]

    async def list_keys(self, prefix: str) -> list[str]:
        return [o.key for o in await self.list_objects(prefix)]

    async def list_after(self, prefix: str, start_after: str | None, limit: int) -> list[str]:
        keys = await self.list_keys(prefix)
        return [k for k in keys if start_after is None or k > start_after][:limit]

    async def list_prefixes(self, prefix: str) -> list[str]:
        below = {k[len(prefix) :].split("/", 1)[0] for k in await self.list_keys(prefix)}
        return sorted(
            prefix + b + "/"
            for b in below
            if any(k.startswith(prefix + b + "/") for k in self.names())
        )

    async def get_lifecycle(self) -> LifecycleConfig | None:
        return self.lifecycle

    async def set_lifecycle(self, config: LifecycleConfig) -> None:
        self.lifecycle = config

    def names(self) -> set[str]:
        """Every key stored (in the service's bucket or another)."""
        return {key for (_bucket, key) in self.objects}


@dataclass(frozen=True)
class Published:
    """One message the fake broker took, as the real one would have carried it."""

    exchange: str
    routing_key: str
    body: bytes
    properties: MessageProperties

    @property
    def message_id(self) -> str | None:
        return self.properties.get("message_id")

    def json(self) -> Any:
        return json.loads(self.body)


class InMemoryBroker:
    """`shared.adapters.broker.Broker` as a list: every publish is confirmed and kept in order,
    except to the routing keys in `unroutable` (NotRoutable, as a vanished reply queue)."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.unroutable: set[str] = set()

    async def publish(
        self, exchange: str, routing_key: str, body: Body, **properties: Unpack[MessageProperties]
    ) -> None:
        if routing_key in self.unroutable:
            raise NotRoutable(f"no queue for {exchange!r}/{routing_key!r}")
        raw = body if isinstance(body, bytes) else body.model_dump_json(by_alias=True).encode()
        self.published.append(Published(exchange, routing_key, raw, properties))

    def to(self, exchange: str) -> list[Published]:
        """What went to `exchange`, in order."""
        return [p for p in self.published if p.exchange == exchange]

    def deliveries(self, exchange: str) -> list[WebhookDelivery]:
        """The webhook deliveries queued through `exchange` (the webhooks exchange)."""
        return [WebhookDelivery.model_validate_json(p.body) for p in self.to(exchange)]


class _Absent:
    """A connection or channel the fast paths must not touch: any use fails the test."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the fast test touched the {self._what} ({name})")


def fake_context(
    store: InMemoryStore,
    broker: InMemoryBroker,
    doors: Mapping[str, DoorAnnouncements] | None = None,
    settings: Settings | None = None,
) -> Context:
    """A process context over the fakes: records in `store`, publishes to `broker`; no
    connection, channel or worker pool (any use of the first two fails)."""
    settings = settings or Settings()
    return Context(
        settings=settings,
        topology=topology_for(settings),
        connection=cast(AbstractRobustConnection, _Absent("broker connection")),
        channel=cast(AbstractChannel, _Absent("broker channel")),
        broker=broker,
        # Storage's file transfers (download, put_file) are not faked: no fast path uses them.
        storage=cast(Storage, store),
        jobs=JobStore(store),
        pool=None,
        doors=doors or {},
    )
