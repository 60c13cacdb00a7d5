"""GET /metrics in the Prometheus text format: renewals by state, time to validation, tenant
health, monitor sweeps and failures, alerts. Gauges are read from the database at scrape time, so
every replica reports the same totals; counters are this process's own. A scrape's work is
bounded: the database answers with aggregates (counts by state, the histogram's buckets in one
row), never a row per renewal."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from core.delivery import DeliveryTotals
from core.ports import DurationHistogram

BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0, 7 * 24 * 3600.0)


@dataclass
class ProcessMetrics:
    sweeps: int = 0
    last_sweep_seconds: float = 0.0


def _histogram(name: str, help_text: str, hist: DurationHistogram) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound, count in zip(hist.bounds, hist.at_most, strict=True):
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {count}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {hist.count}')
    lines.append(f"{name}_sum {hist.total_seconds:.3f}")
    lines.append(f"{name}_count {hist.count}")
    return lines


def render(
    renewals: dict[str, int],
    tenants: dict[str, int],
    durations: DurationHistogram,
    process: ProcessMetrics,
    checks: int,
    failures: int,
    alerts: int,
    outbox: dict[str, int] | None = None,
    delivery: DeliveryTotals | None = None,
) -> str:
    out = ["# HELP renewbot_renewals Renewals by state.", "# TYPE renewbot_renewals gauge"]
    out += [f'renewbot_renewals{{state="{s}"}} {n}' for s, n in sorted(renewals.items())]
    out += ["# HELP renewbot_tenants Tenants by token health.", "# TYPE renewbot_tenants gauge"]
    out += [f'renewbot_tenants{{auth_state="{s}"}} {n}' for s, n in sorted(tenants.items())]
    out += _histogram(
        "renewbot_renewal_validation_seconds", "Time from request to validation.", durations
    )
    counters = [
        ("renewbot_monitor_sweeps_total", "Token health sweeps run.", process.sweeps),
        ("renewbot_monitor_checks_total", "Tenant token checks done.", checks),
        ("renewbot_monitor_failures_total", "Tenant token checks that failed.", failures),
        ("renewbot_alerts_total", "Health alerts announced.", alerts),
    ]
    if delivery is not None:
        d = delivery
        counters += [
            ("renewbot_chat_delivered_total", "Chat messages delivered.", d.delivered),
            ("renewbot_chat_rate_limited_total", "Sends a platform throttled.", d.rate_limited),
            ("renewbot_chat_retried_total", "Sends that failed, to retry later.", d.retried),
            ("renewbot_chat_undeliverable_total", "Messages refused for good.", d.failed),
        ]
    for name, help_text, value in counters:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
    out += [
        "# HELP renewbot_monitor_sweep_seconds Duration of the last sweep.",
        "# TYPE renewbot_monitor_sweep_seconds gauge",
        f"renewbot_monitor_sweep_seconds {process.last_sweep_seconds:.3f}",
    ]
    if outbox is not None:
        out += [
            "# HELP renewbot_outbox_messages Chat messages stored: waiting, or refused for good.",
            "# TYPE renewbot_outbox_messages gauge",
        ]
        out += [f'renewbot_outbox_messages{{state="{s}"}} {n}' for s, n in sorted(outbox.items())]
    return "\n".join(out) + "\n"


def response(text: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
