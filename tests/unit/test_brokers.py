"""shared/adapters/brokers.py: the address list of PDFRELAY_AMQP_URL, tried in turn."""

from __future__ import annotations

from yarl import URL

from shared.adapters.brokers import MultiNodeConnection, split_urls

URLS = ["amqp://u:p@127.0.0.1:5781/", "amqp://u:p@127.0.0.1:5782/", "amqp://u:p@127.0.0.1:5783/"]


def test_the_list_is_split_on_commas() -> None:
    assert split_urls(" , ".join(URLS) + ",") == URLS
    assert split_urls(URLS[0]) == [URLS[0]]


async def test_every_connection_attempt_goes_to_the_next_address() -> None:
    connection = MultiNodeConnection([URL(u) for u in URLS], start=1)
    seen = []
    for _ in range(4):
        connection.transport = None  # what aio-pika does right before each attempt
        seen.append(connection.url.port)
    assert seen == [5782, 5783, 5781, 5782]


async def test_a_new_secret_applies_to_every_address() -> None:
    connection = MultiNodeConnection([URL(u) for u in URLS])
    connection.url = connection.url.with_password("rotated")
    assert {u.password for u in connection._urls} == {"rotated"}
