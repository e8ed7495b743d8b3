"""Charts drawn on the server as SVG geometry (a template turns it into markup, escaping every text).

Why SVG from the server: it scales, needs no script (the pages' Content-Security-Policy allows
none), works offline, and a test can read the numbers back from the markup. Colours are the
Okabe-Ito palette, which stays distinguishable with the common colour-vision deficiencies; every
bar also carries its value as a tooltip and the table under the chart repeats the numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Okabe & Ito (2008), "Color Universal Design": the colour-blind-safe qualitative palette
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 64


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str  # the tooltip: "v2, 👍 reactions: 5"
    value: int


@dataclass
class Tick:
    position: float
    label: str
    anchor: str = "middle"  # SVG text-anchor: the first and last time ticks stay inside the plot


@dataclass
class Chart:
    """Everything the template draws: bars or a path, axis ticks, axis titles, a legend."""

    title: str
    x_label: str
    y_label: str
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (colour, label)
    path: str = ""  # a step line (the version timeline)
    points: list[Bar] = field(default_factory=list)  # markers on the line

    @property
    def plot_left(self) -> int:
        return LEFT

    @property
    def plot_bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def plot_right(self) -> int:
        return self.width - RIGHT


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (1, 2 or 5 times a power of ten apart)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0)
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(ticks[-1] + step)
    return ticks


def grouped_bars(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, str]],
    values: dict[str, dict[str, int]],
    *,
    x_label: str,
    y_label: str,
) -> Chart:
    """One cluster of bars per group, one bar per series (``(key, label)``), ``values[group][key]``."""
    chart = Chart(title, x_label, y_label)
    chart.legend = [(PALETTE[i % len(PALETTE)], label) for i, (_, label) in enumerate(series)]
    top = max((values.get(g, {}).get(k, 0) for g in groups for k, _ in series), default=0)
    ticks = nice_ticks(top)
    scale = (chart.plot_bottom - TOP) / ticks[-1]
    chart.y_ticks = [Tick(chart.plot_bottom - t * scale, f"{t:g}") for t in ticks]
    slot = (chart.plot_right - LEFT) / max(len(groups), 1)
    bar_w = slot * 0.8 / max(len(series), 1)
    for gi, group in enumerate(groups):
        left = LEFT + gi * slot + slot * 0.1
        chart.x_ticks.append(Tick(LEFT + (gi + 0.5) * slot, group))
        for si, (key, label) in enumerate(series):
            value = int(values.get(group, {}).get(key, 0))
            h = value * scale
            chart.bars.append(
                Bar(
                    left + si * bar_w,
                    chart.plot_bottom - h,
                    max(bar_w - 1, 1),
                    h,
                    PALETTE[si % len(PALETTE)],
                    f"{group}, {label}: {value}",
                    value,
                )
            )
    return chart


def timeline(title: str, events: Sequence[tuple[float, str, str, int]], now: float) -> Chart:
    """The current version over time: ``events`` are (unix time, label, action, version number)."""
    chart = Chart(title, "time (UTC)", "current version")
    if not events:
        return chart
    start = events[0][0]
    span = max(now - start, 1.0)
    top = max(e[3] for e in events)
    ticks = list(range(0, top + 1))
    scale = (chart.plot_bottom - TOP) / max(top, 1)
    chart.y_ticks = [Tick(chart.plot_bottom - t * scale, f"v{t}" if t else "") for t in ticks]

    def x(t: float) -> float:
        return LEFT + (t - start) / span * (chart.plot_right - LEFT)

    def y(n: int) -> float:
        return chart.plot_bottom - n * scale

    points = []
    for i, (when, label, action, number) in enumerate(events):
        points += [f"M{x(when):.1f} {y(number):.1f}"] if i == 0 else [f"H{x(when):.1f}", f"V{y(number):.1f}"]
        colour = PALETTE[0] if action == "promote" else PALETTE[1]
        chart.points.append(Bar(x(when), y(number), 4, 4, colour, f"{label}: {action} v{number}", number))
    points.append(f"H{x(now):.1f}")
    chart.path = " ".join(points)
    chart.legend = [(PALETTE[0], "promotion"), (PALETTE[1], "rollback")]
    for t, anchor in ((start, "start"), (start + span / 2, "middle"), (now, "end")):
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")
        chart.x_ticks.append(Tick(x(t), label, anchor))
    return chart
