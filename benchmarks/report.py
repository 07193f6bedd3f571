"""The benchmark's tables: per-round ratios, medians and spreads, and #13's targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import RoundTrip, Throughput, median, spread


@dataclass
class Results:
    """Each metric's result per round (in round order); peers missing or failed."""

    runs: dict[str, list[Any]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.runs.setdefault(key, []).append(value)

    def values(self, key: str, pick: Callable[[Any], float]) -> list[float]:
        return [_ok(pick, r) for r in self.runs.get(key, [])]

    def ratio(self, mine: str, peer: str, pick: Callable[[Any], float]) -> tuple[float, str]:
        """Median over rounds of mine/peer, each round's pair taken together."""
        pairs = zip(self.values(mine, pick), self.values(peer, pick), strict=False)
        ratios = [a / b for a, b in pairs if a == a and b == b and a > 0 and b > 0]
        if not ratios:
            return float("nan"), "-"
        return statistics.median(ratios), spread(ratios)


def _ok(pick: Callable[[Any], float], result: Any) -> float:
    if isinstance(result, Throughput) and (result.lost or not result.rate):
        return float("nan")
    if isinstance(result, RoundTrip) and result.lost:
        return float("nan")
    return pick(result)


def rate(r: Throughput) -> float:
    return r.rate


def cpu(r: Throughput) -> float:
    return r.cpu_us


def p50(r: RoundTrip) -> float:
    return r.p50_us


def p99(r: RoundTrip) -> float:
    return r.p99_us


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(" | ".join(cells))


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def _throughput_rows(res: Results, mine: str, keys: list[tuple[str, str]]) -> list[tuple[str, ...]]:
    rows = []
    for label, key in keys:
        if key.split(" ")[0] in res.missing:
            rows.append((label, "not installed", "", "", "", ""))
            continue
        if key in res.failed and key not in res.runs:
            rows.append((label, "FAILED", "", "", "", ""))
            continue
        rates = res.values(key, rate)
        ratio, ratio_spread = res.ratio(mine, key, rate) if key != mine else (1.0, "")
        rows.append(
            (
                label,
                _fmt(median(rates)),
                spread(rates),
                _fmt(median(res.values(key, cpu)), 1),
                _fmt(ratio, 2),
                ratio_spread,
            )
        )
    return rows


def print_results(res: Results) -> None:
    header = ("path", "events/s", "spread", "CPU µs/event", "voicebus/peer", "spread")
    print("\nin-process: emit -> one async handler (voicebus validates every payload)")
    mem = [
        ("voicebus memory://", "voicebus memory://"),
        ("pyee AsyncIOEventEmitter", "pyee memory"),
        ("bubus 1.5", "bubus memory"),
        ("bare asyncio.Queue -> handler", "asyncio.Queue memory"),
    ]
    _table(header, _throughput_rows(res, "voicebus memory://", mem))
    for qos in (0, 1):
        print(f"\nMQTT end to end, QoS {qos} (100 in flight)")
        names = ("voicebus", "aiomqtt", "faststream", "paho")
        labels = ("voicebus", "raw aiomqtt", "FastStream", "paho, two threads")
        keys = [(lab, f"{name} e2e q{qos}") for lab, name in zip(labels, names, strict=True)]
        _table(header, _throughput_rows(res, f"voicebus e2e q{qos}", keys))
    print("\nrequest round trip (sequential)")
    rows = []
    for qos in (0, 1):
        for label, name in (
            ("voicebus request", "voicebus"),
            ("paho ping-pong", "paho"),
            ("raw aiomqtt", "aiomqtt"),
        ):
            key = f"{name} rtt q{qos}"
            if key not in res.runs:
                rows.append((f"{label}, QoS {qos}", "-", "-", "-", "-"))
                continue
            a, _ = res.ratio(f"voicebus rtt q{qos}", key, p50)
            b, _ = res.ratio(f"voicebus rtt q{qos}", key, p99)
            rows.append(
                (
                    f"{label}, QoS {qos}",
                    _fmt(median(res.values(key, p50))),
                    _fmt(median(res.values(key, p99))),
                    _fmt(a, 2),
                    _fmt(b, 2),
                )
            )
    _table(("path", "p50 µs", "p99 µs", "voicebus/peer p50", "voicebus/peer p99"), rows)
    for key, why in {**res.missing, **res.failed}.items():
        print(f"  {key}: {why}")


def scale_key(transport: str, kind: str, k: int) -> str:
    """The `Results` key of a scaling cell (its CPU µs per event, one per round)."""
    return f"scale {transport} {kind} {k}"


def print_scaling(res: Results, scales: dict[str, tuple[int, ...]]) -> None:
    print("\nscaling: CPU µs per event (this process; sender and receiver buses), median")
    rows = []
    for kind, values in scales.items():
        for k in values:
            row = [f"{kind} {k}"]
            for transport in ("memory://", "MQTT"):
                cell = _median(res.values(scale_key(transport, kind, k), float))
                ratio, _ = res.ratio(
                    scale_key(transport, kind, k), scale_key(transport, kind, 1), float
                )
                row += [_fmt(cell, 1), _fmt(ratio, 2)]
            rows.append(tuple(row))
    _table(("cell", "memory://", "x of 1", "MQTT QoS 0", "x of 1"), rows)


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def print_done_when(
    res: Results,
    rss: tuple[float, float, float],
    first: int,
    total: int,
    load: str,
) -> None:
    """#13's Done-when ratios, each with its target and whether it is met."""
    rows: list[tuple[str, ...]] = []

    def check(label: str, value: float, target: float, at_least: bool, extra: str = "") -> None:
        met = value >= target if at_least else value <= target
        status = "not measured" if value != value else "met" if met else "NOT MET"
        sign = ">=" if at_least else "<="
        rows.append((label, _fmt(value, 2), extra, f"{sign} {target}", status))

    value, s = res.ratio("voicebus memory://", "pyee memory", rate)
    check("memory:// / pyee events/s", value, 1.0, True, s)
    for qos in (0, 1):
        for peer, label in (("aiomqtt", "raw aiomqtt"), ("faststream", "FastStream")):
            value, s = res.ratio(f"voicebus e2e q{qos}", f"{peer} e2e q{qos}", rate)
            check(f"MQTT e2e QoS {qos} / {label}", value, 2.0, True, s)
    for qos in (1, 0):
        value, s = res.ratio(f"voicebus e2e q{qos}", f"paho e2e q{qos}", rate)
        check(
            f"MQTT e2e QoS {qos} / paho two threads" + (" (if possible)" if not qos else ""),
            value,
            1.0,
            True,
            s,
        )
    for qos in (0, 1):
        for name, pick in (("p50", p50), ("p99", p99)):
            value, s = res.ratio(f"voicebus rtt q{qos}", f"paho rtt q{qos}", pick)
            check(f"round trip {name} QoS {qos} / paho", value, 1.0, False, s)
    value, s = res.ratio(scale_key("MQTT", "filters", 100), scale_key("MQTT", "filters", 1), float)
    check("MQTT CPU/event, 100 matching filters / 1", value, 1.5, False, s)
    before, after_first, after_all = rss
    if before != before:  # not measured (--only)
        rows.append((f"RSS after {total:,} - after {first:,} memory:// events", "-", "", "", ""))
    else:
        rows.append(
            (
                f"RSS after {total:,} - after {first:,} memory:// events",
                f"{after_all - after_first:+.1f} MB",
                f"{before:.0f} -> {after_first:.0f} -> {after_all:.0f} MB",
                "<= 10 MB",
                "met" if after_all - after_first <= 10 else "NOT MET",
            )
        )
    print(f"\n#13 Done when ({load}; ratio = voicebus / peer, median over rounds and its spread)")
    _table(("target", "value", "spread / detail", "target", "status"), rows)
