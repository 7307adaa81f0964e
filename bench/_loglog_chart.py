"""Log-log line charts as PNG, drawn with Pillow's ImageDraw (no plotting library needed for a bench run).

Each chart shows its series' points joined by lines, decade grid lines, and for every series a dashed line
of slope 1 through its first point: a curve that climbs faster than its dashed line grows worse than
linearly. (The leading underscore keeps ``python3 -m bench`` from listing this module as a benchmark.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 900, 560
LEFT, RIGHT, TOP, BOTTOM = 80, 30, 50, 150
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


@dataclass
class Curve:
    label: str
    points: list[tuple[float, float]]  # (x, y), both > 0


def _decades(low: float, high: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def _label(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def draw_chart(path: Path, title: str, xlabel: str, ylabel: str, curves: list[Curve]) -> None:
    points = [(x, y) for c in curves for x, y in c.points if x > 0 and y > 0]
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_ticks, y_ticks = _decades(min(xs), max(xs)), _decades(min(ys), max(ys))
    x0, x1 = math.log10(x_ticks[0]), math.log10(x_ticks[-1])
    y0, y1 = math.log10(y_ticks[0]), math.log10(y_ticks[-1])
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        px = LEFT + (math.log10(x) - x0) / (x1 - x0) * plot_w
        py = TOP + plot_h - (math.log10(y) - y0) / (y1 - y0) * plot_h
        return px, py

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((LEFT, 15), title, fill="black", font=font)
    for tick in x_ticks:
        px, _ = at(tick, 10**y0)
        draw.line([(px, TOP), (px, TOP + plot_h)], fill="#dddddd")
        draw.text((px - 8, TOP + plot_h + 6), _label(tick), fill="black", font=font)
    for tick in y_ticks:
        _, py = at(10**x0, tick)
        draw.line([(LEFT, py), (LEFT + plot_w, py)], fill="#dddddd")
        draw.text((10, py - 6), _label(tick), fill="black", font=font)
    draw.rectangle([(LEFT, TOP), (LEFT + plot_w, TOP + plot_h)], outline="black")
    draw.text((LEFT + plot_w // 2 - 60, TOP + plot_h + 24), xlabel, fill="black", font=font)
    draw.text((10, TOP - 20), ylabel, fill="black", font=font)
    for i, curve in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        mine = [(x, y) for x, y in curve.points if x > 0 and y > 0]
        if not mine:
            continue
        # Slope 1 through the first point, up to the last x: the linear reference, dashed.
        (fx, fy), lx = mine[0], mine[-1][0]
        steps = 40
        for s in range(0, steps, 2):
            a = fx * (lx / fx) ** (s / steps)
            b = fx * (lx / fx) ** ((s + 1) / steps)
            if fy * b / fx <= 10**y1:  # inside the plot only
                draw.line([at(a, fy * a / fx), at(b, fy * b / fx)], fill=colour, width=1)
        if len(mine) > 1:
            draw.line([at(x, y) for x, y in mine], fill=colour, width=3)
        for x, y in mine:
            px, py = at(x, y)
            draw.ellipse([(px - 4, py - 4), (px + 4, py + 4)], fill=colour)
        legend_y = TOP + plot_h + 50 + 16 * i
        draw.rectangle([(LEFT, legend_y + 3), (LEFT + 20, legend_y + 9)], fill=colour)
        draw.text((LEFT + 28, legend_y), curve.label, fill="black", font=font)
    draw.text(
        (LEFT + plot_w - 300, TOP + plot_h + 50 + 16 * len(curves)),
        "dashed: slope 1 (linear) through each first point",
        fill="#555555",
        font=font,
    )
    image.save(path)
