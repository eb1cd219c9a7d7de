"""What GitHub and Forgejo share: pull requests over a GitHub-shaped REST API.

Forgejo's API (inherited from Gitea) was modelled on GitHub's, and for the
calls the gate makes the two agree on the shapes that matter: a pull request
(``number``, ``state``, ``merged``, ``head.sha``, ``base.ref``, ``labels``,
``mergeable``, ``html_url``), commit statuses, issue comments, ``Link``
pagination, ``refs/pull/<n>/head``.  That much lives here, once.

Where they do not agree the system's own package says how: the API root and
the authorization header, the merge call (GitHub ``PUT .../merge`` with
``sha`` and a JSON answer naming the merge commit; Forgejo ``POST .../merge``
with ``Do`` and ``head_commit_id`` and an empty answer), review states
(``CHANGES_REQUESTED`` vs ``REQUEST_CHANGES``, GitHub's ``DISMISSED`` state vs
Forgejo's ``dismissed`` flag), permission names, webhook headers, signatures
and event names (``synchronize`` vs ``pull_request_sync``/``synchronized``).
"""
