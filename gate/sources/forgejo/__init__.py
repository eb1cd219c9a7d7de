"""Forgejo (and Gitea, whose API and webhooks Forgejo keeps) as a review system.

``config`` the connection's keys; ``connection`` the REST client and the
webhook's verification; ``payloads`` webhook deliveries into events;
``source`` the ``ChangeSource`` (approval, merge, report), built on what Forgejo
shares with GitHub (``gate.sources.pulls``).  Set-up: docs/sources/forgejo.md.
"""
