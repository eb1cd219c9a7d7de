"""A fedora-messaging consumer of a Pagure instance's messages.

src.fedoraproject.org publishes every event of every project on Fedora's AMQP
broker (``pagure/lib/notify.py`` ``fedora_messaging_publish``), topic
``org.fedoraproject.prod.pagure.<pagure topic>``, the message body being the
same ``msg`` a web-hook carries.  The consumer binds a queue to the
``pull-request.#`` and ``git.receive`` topics and hands each message to the
driver's intake (:class:`~gate.sources.pagure.intake.Intake`), which keeps the
ones about the gate's projects and stores them as deliveries, keyed by the
message id (the broker redelivers what was not acknowledged).

fedora-messaging runs on Twisted.  The reactor runs in a thread of its own
(crochet, as ``fedora_messaging.api.consume`` does); callbacks run in Twisted's
thread pool and hand each message to the daemon's asyncio loop, waiting until
it is stored before acknowledging it.  A message that could not be stored for
a transient fault is returned to the queue (``Nack``) after a pause; the
broker redelivers it.

fedora-messaging keeps one broker connection per process (its
``config.conf["amqp_url"]``): every Pagure connection of one gate with
``messaging`` set must use the same broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gate.faults import is_transient
from gate.sources.pagure.config import MessagingConfig
from gate.sources.pagure.messages import SUBSCRIBED

log = logging.getLogger(__name__)

#: (topic as published, body, message id) -> stored (or not ours)
Take = Callable[[str, dict[str, Any], str], Coroutine[Any, Any, None]]
#: seconds a callback waits for the loop to store a message; pause before a Nack
STORE_TIMEOUT = 120.0
NACK_PAUSE = 5.0

#: the broker URL fedora-messaging was set up with in this process
_configured_url: str | None = None


def _setup(config: MessagingConfig) -> None:
    """Point fedora-messaging's process-wide config at the broker (once)."""
    global _configured_url
    from fedora_messaging import config as fm_config

    url = config.amqp_url.get_secret_value()
    if _configured_url is not None:
        if url != _configured_url:
            raise ValueError("every Pagure connection's messaging must use the same broker")
        return
    tls = {"ca_cert": config.ca_cert, "certfile": config.certfile, "keyfile": config.keyfile}
    fm_config.conf.update({"amqp_url": url, "tls": tls})
    _configured_url = url


class Consumer:
    """One queue bound to one Pagure instance's topics."""

    def __init__(self, connection: str, config: MessagingConfig, url: str, take: Take) -> None:
        self.connection = connection
        self.config = config
        self.queue = config.queue_name(connection, url)
        self.prefix = f"{config.topic_prefix}.pagure."
        self._take = take
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumers: list[Any] = []

    def bindings(self) -> list[dict[str, Any]]:
        return [
            {
                "exchange": self.config.exchange,
                "queue": self.queue,
                "routing_keys": [self.prefix + topic for topic in SUBSCRIBED],
            }
        ]

    def queues(self) -> dict[str, dict[str, Any]]:
        return {
            self.queue: {
                "durable": self.config.durable,
                "auto_delete": not self.config.durable,
                "exclusive": False,
                "arguments": {},
            }
        }

    async def start(self) -> None:
        """Declare the queue and start consuming (the reactor thread starts once)."""
        import crochet
        from fedora_messaging import api

        _setup(self.config)
        crochet.setup()
        self._loop = asyncio.get_running_loop()
        start = crochet.run_in_reactor(api.twisted_consume)
        pending = start(self.callback, bindings=self.bindings(), queues=self.queues())
        self._consumers = list(await asyncio.to_thread(pending.wait, 60))
        log.info("%s: consuming %s from queue %s", self.connection, self.prefix + "*", self.queue)

    async def stop(self) -> None:
        if not self._consumers:
            return
        import crochet
        from twisted.internet import defer

        consumers, self._consumers = self._consumers, []

        def cancel() -> Any:
            return defer.gatherResults([c.cancel() for c in consumers])

        try:
            await asyncio.to_thread(crochet.run_in_reactor(cancel)().wait, 30)
        except Exception:
            log.exception("%s: stopping the fedora-messaging consumer", self.connection)

    def callback(self, message: Any) -> None:
        """fedora-messaging's consumer callback (a Twisted pool thread)."""
        from fedora_messaging.exceptions import Drop, Nack

        loop = self._loop
        if loop is None or loop.is_closed():
            raise Nack()
        body = message.body
        if not isinstance(body, dict):
            log.warning("%s: message %s is not an object; dropped", self.connection, message.id)
            raise Drop()
        future = asyncio.run_coroutine_threadsafe(
            self._take(str(message.topic), body, str(message.id)), loop
        )
        try:
            future.result(STORE_TIMEOUT)
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, TimeoutError):
                log.warning(
                    "%s: message %s not stored (%s); returned to the queue",
                    self.connection,
                    message.id,
                    exc,
                )
                time.sleep(NACK_PAUSE)
                raise Nack() from exc
            log.exception("%s: message %s could not be taken; dropped", self.connection, message.id)
            raise Drop() from exc
