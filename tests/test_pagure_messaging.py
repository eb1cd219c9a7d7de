"""The fedora-messaging intake: real ``fedora_messaging`` Message objects, and a real
broker when one answers on 127.0.0.1:5672 (RabbitMQ's default guest account)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fedora_messaging.exceptions import Drop, Nack
from fedora_messaging.message import Message

from gate.sources.pagure.client import PagureClient
from gate.sources.pagure.config import MessagingConfig, PagureConfig
from gate.sources.pagure.intake import Intake
from gate.sources.pagure.messaging import Consumer
from tests.fakepagure import FakePagure

DATA = Path(__file__).parent / "data" / "pagure"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def broker_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


class Stored:
    """A StoreDelivery that keeps deliveries in memory, deduplicated by key."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fail: list[Exception] = []

    async def __call__(
        self, source: str, event_type: str, payload: dict[str, Any], key: str | None
    ) -> bool:
        if self.fail:
            raise self.fail.pop(0)
        assert key is not None
        if f"{source}:{key}" in self.rows:
            return False
        self.rows[f"{source}:{key}"] = (event_type, payload)
        return True


def captured_message(name: str, prefix: str = "org.fedoraproject.prod") -> Message:
    body = json.loads((DATA / f"{name}.json").read_text())
    topic = body.pop("topic").replace("org.fedoraproject.prod", prefix)
    body.pop("timestamp", None)
    return Message(topic=topic, body=body)


@pytest.fixture
async def pagure(tmp_path: Path) -> AsyncIterator[FakePagure]:
    fake = FakePagure(tmp_path / "pagure")
    await fake.start()
    fake.project("rpms/python-teamcity-messages", "mmassari", {"a.spec": "x"})
    fake.project("rpms/buildah", "rhcontainerbot", {"a.spec": "x"})
    yield fake
    await fake.stop()


def intake_for(pagure: FakePagure, store: Stored, **messaging: Any) -> Intake:
    config = PagureConfig.model_validate(
        {
            "url": pagure.url,
            "approval": {"command": "/packit koji-build"},
            "messaging": {"amqp_url": AMQP_URL, **messaging},
        }
    )
    client = PagureClient(pagure.url, None, 10)
    return Intake(
        "fedora", config, client, {"rpms/python-teamcity-messages", "rpms/buildah"}, store
    )


async def test_messages_about_our_projects_are_stored_once_by_message_id(
    pagure: FakePagure,
) -> None:
    store = Stored()
    intake = intake_for(pagure, store)
    comment = captured_message("pagure_pr_comment")
    for message in (comment, comment, captured_message("distgit_commit")):
        await intake.take_message(message.topic, message.body, message.id)
    other = captured_message("pagure_pr_new")  # rpms/optee_os: not a project of this gate
    await intake.take_message(other.topic, other.body, other.id)
    staging = captured_message("pagure_pr_new", "org.fedoraproject.stg")
    await intake.take_message(staging.topic, staging.body, staging.id)
    assert sorted(t for t, _ in store.rows.values()) == [
        "pagure.git.receive",
        "pagure.pull-request.comment.added",
    ]
    _, payload = store.rows[f"fedora:{comment.id}"]
    assert payload["via"] == "fedora-messaging" and payload["msg_id"] == comment.id
    # the command's author was checked with the API: the owner may approve
    assert payload["authority"] == {
        "user": "mmassari",
        "may_approve": True,
        "why": "owner of rpms/python-teamcity-messages",
    }
    await intake.client.close()


async def test_the_consumer_callback_acks_nacks_and_drops(
    pagure: FakePagure, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    faults: list[Exception] = []

    async def take(topic: str, body: dict[str, Any], msg_id: str) -> None:
        if faults:
            raise faults.pop(0)
        taken.append(msg_id)

    config = MessagingConfig.model_validate({"amqp_url": AMQP_URL})
    consumer = Consumer("fedora", config, pagure.url, take)
    consumer._loop = asyncio.get_running_loop()
    message = captured_message("distgit_commit")
    await asyncio.to_thread(consumer.callback, message)  # returns: acknowledged
    assert taken == [message.id]
    monkeypatch.setattr("gate.sources.pagure.messaging.NACK_PAUSE", 0.0)
    faults.append(OSError(5, "Input/output error"))  # EIO: transient, back to the queue
    with pytest.raises(Nack):
        await asyncio.to_thread(consumer.callback, message)
    faults.append(KeyError("a bug"))  # not transient: dropped, with the traceback logged
    with pytest.raises(Drop):
        await asyncio.to_thread(consumer.callback, message)
    with pytest.raises(Drop):
        await asyncio.to_thread(consumer.callback, Message(topic=message.topic, body=["x"]))
    assert taken == [message.id]


@pytest.mark.skipif(not broker_answers(), reason="no AMQP broker on 127.0.0.1:5672")
async def test_a_real_broker_delivers_our_topics_to_the_store(pagure: FakePagure) -> None:
    from fedora_messaging import api

    store = Stored()
    intake = intake_for(pagure, store, queue=f"rpmgate-test-{uuid.uuid4()}", durable=False)
    assert intake.config.messaging is not None
    consumer = Consumer("fedora", intake.config.messaging, pagure.url, intake.take_message)
    await consumer.start()
    try:
        comment = captured_message("pagure_pr_comment")
        push = captured_message("distgit_commit")
        issue = Message(topic="org.fedoraproject.prod.pagure.issue.new", body={"x": 1})
        for message in (comment, push, comment, issue):
            await asyncio.to_thread(api.publish, message)
        for _ in range(100):
            if len(store.rows) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the duplicate and the unsubscribed topic had their chance
        assert sorted(store.rows) == sorted([f"fedora:{comment.id}", f"fedora:{push.id}"])
    finally:
        await consumer.stop()
        await intake.client.close()
