"""GitHub (github.com and GitHub Enterprise Server) as a review system.

``config`` the connection's keys; ``connection`` the REST client and the
webhook's verification; ``payloads`` webhook deliveries into events;
``source`` the ``ChangeSource`` (approval, merge, report), built on what GitHub
shares with Forgejo (``gate.sources.pulls``).  Set-up: docs/sources/github.md.
"""
