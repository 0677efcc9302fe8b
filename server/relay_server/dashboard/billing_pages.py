"""Usage and invoices: monthly billing periods with their line items, and a CSV of them
(``ListBillingPeriods``; ``billing:read``).

The CSV is built from the same API reply as the page, so the file and the
page never disagree; it is a download (``Content-Disposition``), not a page.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from relay_server.dashboard.relay_api import ApiError, api_error_message
from relay_server.dashboard.tenant_pages import _auth, _member, _provisioning, _status, ts
from relay_server.dashboard.web import API, BASE, render

routes = web.RouteTableDef()
PERIODS_PER_PAGE = 12  # a year of months per environment
CSV_MAX_PERIODS = 120  # ten years: a bound on one download

CSV_HEADER = ("period_start", "period_end", "environment", "status", "model_id", "requests", "input_tokens",
              "output_tokens", "cost_usd", "provider_cost_usd")


def _day(value: Any) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}" if value.year else ""


def _environment(request: web.Request) -> str:
    value = request.query.get("environment", "live")
    return value if value in ("live", "test") else "live"


@routes.get(f"{BASE}/billing")
async def billing(request: web.Request) -> web.StreamResponse:
    member = _member(request)
    if (waiting := _provisioning(request, member)) is not None:
        return waiting
    env = _environment(request)
    periods: list[Any] = []
    error, next_token, status = "", "", 200
    try:
        reply = await request.app[API].client.usage.list_billing_periods(
            environment=env, page_size=PERIODS_PER_PAGE, page_token=request.query.get("page_token", ""),
            **_auth(request, member),
        )
        periods, next_token = list(reply.billing_periods), reply.next_page_token
    except ApiError as exc:
        error, status = api_error_message(exc), _status(exc)
    return render(request, "billing.html", status, member=member, periods=periods, environment=env,
                  next_page_token=next_token, error=error, day=_day, ts=ts)


@routes.get(f"{BASE}/billing.csv")
async def billing_csv(request: web.Request) -> web.StreamResponse:
    """Every line item of every period of one environment, newest period first."""
    member = _member(request)
    env = _environment(request)
    api, auth = request.app[API].client, _auth(request, member)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    token, seen = "", 0
    try:
        while seen < CSV_MAX_PERIODS:
            reply = await api.usage.list_billing_periods(environment=env, page_size=PERIODS_PER_PAGE,
                                                         page_token=token, **auth)
            for period in reply.billing_periods:
                seen += 1
                for line in period.line_items:
                    writer.writerow((_day(period.period_start), _day(period.period_end), period.environment,
                                     period.status, _csv_safe(line.model_id), line.request_count, line.input_tokens,
                                     line.output_tokens, line.total_cost.usd, line.provider_cost.usd))
            token = reply.next_page_token
            if not token:
                break
    except ApiError as exc:
        return render(request, "error.html", _status(exc), message=api_error_message(exc))
    return web.Response(
        body=out.getvalue().encode(), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="relay-billing-{member.tenant_slug}-{env}.csv"'},
    )


def _csv_safe(value: str) -> str:
    """A cell a spreadsheet would run as a formula (=, +, -, @) is kept as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value
