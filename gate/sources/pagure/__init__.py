"""Pagure (src.fedoraproject.org, pagure.io) as a review system, with fedora-messaging.

Modules, in the order an event flows through them: ``config`` (the
``type: pagure`` section), ``webhook`` (signature verification), ``messaging``
(the fedora-messaging consumer), ``intake`` (what both do before storing,
including the commit-access check of an approval command, ``authority``),
``messages`` (a stored message into a hint), ``client`` (API 0), ``source``
(the :class:`~gate.sources.base.ChangeSource`), ``reporter`` (flags and
comments).  ``docs/sources/pagure.md`` says what to set up on Pagure.
"""
