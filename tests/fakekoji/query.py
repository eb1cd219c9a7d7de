"""kojihub's query layer, as far as list calls show it to a client.

``query_opts`` applies ``queryOpts`` the way kojihub/db.py QueryProcessor
does (``order`` by select alias, ``offset``, ``limit``, ``countOnly``,
``asList``); without ``order`` there is no ORDER BY, so rows come back in no
particular order (the caller passes them through ``HubState.unordered``).
The ``like``/``glob`` helpers follow PostgreSQL ``ILIKE`` and
``RootExports._prepareSearchTerms``; ``db_error`` is the fault a hub sends
when PostgreSQL rejects a query (kojixmlrpc ``_log_exception``: code 1,
``"<class>: <message>"``).
"""

from __future__ import annotations

import datetime
import re
from typing import Any


def db_error(kind: str, message: str) -> Exception:
    """A psycopg2 error, for the hub to report as it does: fault 1 ``"<class>: text"``.

    (In a multicall the text is the bare message plus a traceback.)
    """
    error_class = type(kind, (Exception,), {"__module__": "psycopg2.errors"})
    return error_class(message)


def query_opts(rows: list[dict[str, Any]], opts: dict[str, Any] | None, columns: list[str]) -> Any:
    """kojihub/db.py QueryProcessor: order, offset, limit, countOnly, asList.

    ``columns`` are the select aliases (an order term must be one of them).
    """
    opts = dict(opts or {})
    if opts.get("countOnly"):
        # QueryProcessor.execute with countOnly: an int (offset/limit applied first)
        return len(_window(rows, opts))
    order = opts.get("order")
    if order:
        # QueryProcessor._order: terms are select aliases; sort is stable, so
        # apply the terms last to first
        for term in reversed(order.split(",")):
            desc = term.startswith("-")
            name = term[1:] if desc else term
            if name not in columns:
                raise Exception("Invalid order: " + name)
            present = [r for r in rows if r.get(name) is not None]
            missing = [r for r in rows if r.get(name) is None]
            present.sort(key=lambda r: r[name], reverse=desc)
            # PostgreSQL: NULLS LAST ascending, NULLS FIRST descending
            rows = missing + present if desc else present + missing
    rows = _window(rows, opts)
    if opts.get("asList"):
        return [list(r.values()) for r in rows]
    return rows


def _window(rows: list[Any], opts: dict[str, Any]) -> list[Any]:
    offset = int(opts.get("offset") or 0)
    limit = opts.get("limit")
    return rows[offset : offset + int(limit)] if limit else rows[offset:]


def like(pattern: str, value: str | None) -> bool:
    """PostgreSQL ``value ILIKE pattern`` (``%`` any run, ``_`` one char, ``\\`` escapes)."""
    if value is None:
        return False
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.IGNORECASE | re.DOTALL) is not None


def glob_to_like(terms: str) -> str:
    """kojihub/kojihub.py RootExports._prepareSearchTerms(terms, 'glob')."""
    return terms.replace("\\", "\\\\").replace("_", r"\_").replace("?", "_").replace("*", "%")


def timestamp(value: Any) -> float:
    """A time filter value: a float (kojihub convert_timestamp) or an ISO string for PostgreSQL."""
    if isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.timestamp()
    return float(value)
