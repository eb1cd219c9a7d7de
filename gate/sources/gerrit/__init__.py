"""Gerrit: the webhooks plugin and stream-events in, the REST API to re-read, vote and submit.

``config`` (the connection's keys), ``client`` (REST), ``hints`` (events in
both shapes, delivery keys), ``approval`` (the gate's trigger rule, patch set
equivalence), ``verify`` (webhook authentication), ``stream`` (SSH
stream-events with catch-up), ``reporter`` (comments and votes), ``source``
(the ChangeSource).  See docs/sources/gerrit.md.
"""
