"""Reading fields of a webhook payload that came from outside: typed, or refused."""

from __future__ import annotations

from typing import Any

from gate.events import Refused


def dig(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise Refused(f"{key} is not an object")
    return value


def text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise Refused(f"{key} is not a string")
    return value


def number(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 10**10:
        raise Refused(f"{key} is not a pull request number")
    return value
