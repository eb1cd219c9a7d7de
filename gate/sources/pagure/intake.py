"""What both intakes (web-hooks and fedora-messaging) do before storing a message.

* keep only the messages about the gate's projects (fedora-messaging carries
  every project of the instance; a fork's message is kept when its parent is
  ours, so that a push to it is seen and ignored on the record);
* for a comment that is the approval command, ask the API whether its author
  has commit access, and store the answer with the message (the check needs
  the network, parsing must not: see :mod:`gate.sources.pagure.authority`);
* store it as a delivery of type ``pagure.<topic>``, keyed by the message id.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from gate.faults import retried_call
from gate.sources.base import StoreDelivery
from gate.sources.pagure import authority
from gate.sources.pagure.client import PagureClient
from gate.sources.pagure.config import PagureConfig
from gate.sources.pagure.messages import (
    TOPIC_PATTERN,
    command_in,
    message_project,
    stored_payload,
)

log = logging.getLogger(__name__)


def event_type(topic: str) -> str:
    return f"pagure.{topic}"


class Intake:
    def __init__(
        self,
        name: str,
        config: PagureConfig,
        client: PagureClient,
        paths: Collection[str],
        store: StoreDelivery | None,
    ) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.paths = frozenset(paths)
        self.store = store

    def ours(self, topic: str, msg: dict[str, Any]) -> bool:
        path = message_project(topic, msg)
        if path is None:
            return False
        if path in self.paths:
            return True
        # forks/<user>/<parent path>: ours to see (and ignore), not to act on
        parts = path.split("/", 2)
        return len(parts) == 3 and parts[0] == "forks" and parts[2] in self.paths

    async def payload(
        self, topic: str, msg: dict[str, Any], msg_id: str, via: str, timestamp: Any = None
    ) -> dict[str, Any]:
        """The delivery to store; an approval command carries its author's authority."""
        doc = stored_payload(topic, msg, msg_id, via, timestamp)
        user = command_in(topic, msg, self.config.approval.command)
        path = message_project(topic, msg)
        if user is not None and path in self.paths:
            found = await authority.check(
                self.client, path, user, self.config.approval.extra_groups
            )
            log.info("%s: %s on %s by %s: %s", self.name, topic, path, user, found.why)
            doc["authority"] = found.as_json()
        return doc

    async def take_message(self, full_topic: str, body: dict[str, Any], msg_id: str) -> None:
        """A fedora-messaging message: stored if it is about one of our projects."""
        messaging = self.config.messaging
        assert messaging is not None and self.store is not None
        prefix = f"{messaging.topic_prefix}.pagure."
        topic = full_topic.removeprefix(prefix)
        if topic == full_topic or not TOPIC_PATTERN.match(topic) or len(topic) > 100:
            log.debug("%s: message %s on %s is not ours", self.name, msg_id, full_topic)
            return
        if not self.ours(topic, body):
            return
        doc = await self.payload(topic, body, msg_id, "fedora-messaging")
        store = self.store
        created = await retried_call(
            lambda: store(self.name, event_type(topic), doc, msg_id),
            f"storing {self.name} message {msg_id}",
            tries=5,
        )
        if created:
            log.info("%s: stored %s message %s", self.name, topic, msg_id)
