"""URLs with their password masked, for what the stack prints and logs.

Every URL form Relay reads is covered: ``postgresql://``, ``redis://``, and the multi-host
``redis+cluster://`` / ``redis+sentinel://`` forms, whose host lists ``urlsplit`` cannot
parse as one host.  The credentials end at the last ``@`` before the query, so a password
with an unescaped ``/`` or ``@`` is still masked whole rather than half shown.
"""

from __future__ import annotations


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (a URL without one is returned as is)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    before_query = rest.split("?", 1)[0]
    at = before_query.rfind("@")
    if at < 0:
        return url
    user, colon, secret = before_query[:at].partition(":")
    if not colon or not secret:
        return url
    return f"{scheme}://{user}:***{rest[at:]}"
