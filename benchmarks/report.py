"""The results table (product vs naive, ratio, target) and results.json."""

from __future__ import annotations

import math
import operator

# (label, product key, naive key, target text, check on the product value or
# on the ratio naive/product when the check names "ratio")
ROWS = (
    (
        "(b) jobs kept current by one poller at 1 s",
        "poller.max_jobs_current_at_1s",
        "poller.naive_max_jobs_current_at_1s",
        ">= 5,000",
        ("value", operator.ge, 5000),
    ),
    (
        "(b) poller CPU at that size, % of one core",
        "poller.cpu_percent_at_max",
        None,
        "<= 50 %",
        ("value", operator.le, 50),
    ),
    (
        "(b) CPU ms per tick per 1,000 jobs (50 % changing)",
        "poller.cpu_ms_per_tick_per_1000_jobs",
        "poller.naive_cpu_ms_per_tick_per_1000_jobs",
        "naive/product >= 15",
        ("ratio", operator.ge, 15),
    ),
    (
        "(b) CardSavr requests per tick (1,000 jobs)",
        "poller.upstream_requests_per_tick",
        "poller.naive_upstream_requests_per_tick",
        "naive/product >= 100",
        ("ratio", operator.ge, 100),
    ),
    (
        "(a) status change -> frame p50, ms (T = 1 s)",
        "latency.p50_ms",
        "latency.naive_p50_ms",
        "<= 515",
        ("value", operator.le, 515),
    ),
    (
        "(a) status change -> frame p95, ms",
        "latency.p95_ms",
        "latency.naive_p95_ms",
        "<= 980",
        ("value", operator.le, 980),
    ),
    (
        "(a) status change -> frame p99, ms",
        "latency.p99_ms",
        "latency.naive_p99_ms",
        "",
        None,
    ),
    (
        "(a) pipeline after poll response p99, ms",
        "latency.pipeline_p99_ms",
        "latency.naive_pipeline_p99_ms",
        "<= 30",
        ("value", operator.le, 30),
    ),
    (
        "(c) idle websockets held by one daphne",
        "websocket.idle_sockets",
        None,
        ">= 10,000",
        ("value", operator.ge, 10000),
    ),
    (
        "(c) daphne RSS with them, MiB",
        "websocket.rss_mib_at_idle",
        None,
        "<= 600",
        ("value", operator.le, 600),
    ),
    (
        "(c) RSS per idle socket, KiB",
        "websocket.rss_kib_per_socket",
        None,
        "<= 40",
        ("value", operator.le, 40),
    ),
    (
        "(c) push 1,000 updates to 1,000 sockets, ms",
        "websocket.fanout_1000_ms",
        "websocket.naive_fanout_1000_ms",
        "<= 100",
        ("value", operator.le, 100),
    ),
    (
        "(c) server CPU for that tick, ms",
        "websocket.fanout_server_cpu_ms",
        "websocket.naive_fanout_server_cpu_ms",
        "<= 50",
        ("value", operator.le, 50),
    ),
    (
        "(d) reply over the socket -> PUT at sandbox p50, ms",
        "reply.p50_ms",
        None,
        "<= 2",
        ("value", operator.le, 2),
    ),
    (
        "(d) reply over the socket -> PUT at sandbox p99, ms",
        "reply.p99_ms",
        None,
        "<= 10",
        ("value", operator.le, 10),
    ),
    (
        "(d) reply over HTTP -> PUT at sandbox p50, ms",
        "reply.http_p50_ms",
        None,
        "",
        None,
    ),
    (
        "(d) reply over HTTP -> PUT at sandbox p99, ms",
        "reply.http_p99_ms",
        None,
        "",
        None,
    ),
    (
        "(e) memory per tracked job, bytes",
        "memory.bytes_per_tracked_job",
        "memory.naive_bytes_per_tracked_job",
        "<= 1,024",
        ("value", operator.le, 1024),
    ),
    (
        "(f) log-log slope of tick CPU, all changing",
        "scaling.slope_all_changing",
        "scaling.naive_slope_all_changing",
        "<= 1.0",
        ("value", operator.le, 1.05),
    ),
    (
        "(f) log-log slope of tick CPU, 100 changing",
        "scaling.slope_fixed_changes",
        "scaling.naive_slope_fixed_changes",
        "<= 0.3",
        ("value", operator.le, 0.3),
    ),
    (
        "(f) tick CPU 10,000 / 1,000 jobs, 100 changing",
        "scaling.cpu_ratio_10k_1k_fixed_changes",
        "scaling.naive_cpu_ratio_10k_1k_fixed_changes",
        "<= 2",
        ("value", operator.le, 2),
    ),
)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or value >= 100:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return str(value)


def _number(value) -> float | None:
    if isinstance(value, int | float) and not (
        isinstance(value, float) and math.isnan(value)
    ):
        return value
    return None


def rows(results: dict) -> list[tuple[str, str, str, str, str, str]]:
    out = []
    for label, key, naive_key, target, check in ROWS:
        value = _number(results.get(key))
        naive = _number(results.get(naive_key)) if naive_key else None
        # A ratio of slopes, or of a count the naive poller does not reach,
        # means nothing.
        meaningful = check is not None and (
            check[0] == "ratio" or "ms" in label or "bytes" in label
        )
        ratio = (
            naive / value
            if meaningful and value and value > 0 and naive and naive > 0
            else None
        )
        met = ""
        if check is not None and value is not None:
            subject, op, bound = check
            probe = ratio if subject == "ratio" else value
            met = "-" if probe is None else ("yes" if op(probe, bound) else "NO")
        out.append(
            (
                label,
                _fmt(value),
                _fmt(naive),
                f"{ratio:,.1f}x" if ratio is not None else "",
                target,
                met,
            )
        )
    return out


def table(results: dict) -> str:
    header = ("figure", "product", "naive", "naive/product", "target", "met")
    body = rows(results)
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]

    def line(cells) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in body)])


def public(results: dict) -> dict:
    """results.json: every figure, without the per-tick detail."""
    return {
        k: v for k, v in results.items() if not k.rsplit(".", 1)[-1].startswith("_")
    }


def markdown(results: dict, table_text: str) -> str:
    machine = results.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    lines = [
        "# Benchmark results",
        "",
        f"Mode: {results.get('mode')}; {results.get('seconds_total')} s in all.",
        f"Machine: {machine.get('cores')} cores ({machine.get('cpu')}), "
        f"{machine.get('memory_gib')} GiB, Python {machine.get('python')}, "
        f"SQLite {machine.get('sqlite')}.",
        f"Versions: {versions}.",
        f"Load average (1, 5, 15 min) at start {machine.get('load_average_at_start')},"
        f" at end {machine.get('load_average_at_end')}.",
        "",
        table_text,
        "",
    ]
    if results.get("failures"):
        lines += ["Failed:", ""]
        lines += [f"- {name}" for name in results["failures"]]
        lines.append("")
    return "\n".join(lines)
