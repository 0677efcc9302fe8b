"""Budget-aware routing: "at or above N % of the cap, route alias X to Y" (docs/routing.md).

Read from the spend caps' own Redis state, as admission's script saw it (the settled spend
before this request, ``HeldCap.spent``), so the rule and the cap never disagree.  A key's rule
reads the key's cap, a tenant's rule the tenant's cap (its configured window, monthly by
default).  Exact in integers: 90 % fires at spent * 10000 >= cap * 9000, not a micro-dollar
earlier.  No cap of that scope, or spend unknown (Redis down): the rule does not fire.
"""

from __future__ import annotations

from relay_server.domain.routing import BudgetRoute
from relay_server.pipeline.steps.admission import Ticket


def budget_share(rule: BudgetRoute, ticket: Ticket | None) -> str | None:
    """The spent share (e.g. ``"90.0%"``) when the rule fires for this request, else None."""
    if ticket is None:
        return None
    scope = "key" if rule.key_id is not None else "tenant"
    for held in ticket.caps:
        if held.cap.scope == scope and held.spent is not None and rule.fires(held.spent, held.cap.cap_micros):
            return f"{held.spent * 100 / held.cap.cap_micros:.1f}%"
    return None
