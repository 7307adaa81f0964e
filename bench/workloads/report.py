"""Turning the comparison's results into a Markdown table and one PNG chart per workload.

``results[workload][kind]`` is ``{"series": [Series.as_json()], "usage": {label: Usage}, "error": str|None}``.
A series with any failed repeat is shown as a failure, never as a figure, and gets no ratio.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

KIND_LABEL = {"ranvier": "Ranvier", "synapse": "Synapse"}
COLOURS = {"ranvier": "#2a7ab0", "synapse": "#d9822b"}


def fmt(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ok(series: dict[str, Any] | None) -> bool:
    return bool(series and series["values"] and not series["failures"])


def cell(series: dict[str, Any] | None, error: str | None) -> str:
    if error:
        return f"FAILED: {short(error)}"
    if series is None:
        return "FAILED: no result"
    if series["failures"]:
        n = len(series["failures"]) + len(series["values"])
        return f"FAILED {len(series['failures'])}/{n}: {short(series['failures'][0])}"
    v = series["values"]
    if len(v) == 1:
        return fmt(v[0])
    return f"{fmt(min(v))} / **{fmt(statistics.median(v))}** / {fmt(max(v))}"


def short(reason: str, n: int = 160) -> str:
    reason = " ".join(reason.split()).replace("|", "/")
    return reason if len(reason) <= n else reason[: n - 1] + "…"


def _rows(results: dict[str, Any], kinds: list[str]) -> list[tuple[str, str, str]]:
    """(metric, size, unit) rows over all kinds."""
    seen: dict[tuple[str, str], str] = {}
    for kind in kinds:
        for s in results.get(kind, {}).get("series", []):
            seen.setdefault((s["metric"], s["size"]), s["unit"])
    # Grouped by metric (in first-seen order), so that one side's failures do not reorder the rows.
    metrics = list(dict.fromkeys(m for m, _size in seen))
    return [(m, size, unit) for metric in metrics for (m, size), unit in seen.items() if m == metric]


def _lookup(results: dict[str, Any], kind: str, metric: str, size: str) -> dict[str, Any] | None:
    for s in results.get(kind, {}).get("series", []):
        if s["metric"] == metric and s["size"] == size:
            return dict(s)
    return None


def markdown(all_results: dict[str, dict[str, Any]], titles: dict[str, str], kinds: list[str]) -> str:
    heads = [KIND_LABEL[k] + " (min / **median** / max)" for k in kinds]
    ratio = len(kinds) == 2
    out: list[str] = []
    for name, results in all_results.items():
        out += [f"### {name}: {titles.get(name, '')}", ""]
        header = ["metric", *heads] + (["Ranvier ÷ Synapse (medians)"] if ratio else [])
        out += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for metric, size, unit in _rows(results, kinds):
            series = {k: _lookup(results, k, metric, size) for k in kinds}
            label = f"{metric}{f' [{size}]' if size else ''} ({unit})"
            row = [label] + [cell(series[k], results.get(k, {}).get("error")) for k in kinds]
            if ratio:
                a, b = (series[k] for k in kinds)
                if ok(a) and ok(b) and not any(results.get(k, {}).get("error") for k in kinds):
                    assert a is not None and b is not None
                    mb = statistics.median(b["values"])
                    row.append(f"{statistics.median(a['values']) / mb:.2f}" if mb else "n/a")
                else:
                    row.append("—")
            out.append("| " + " | ".join(row) + " |")
        # Resources: one figure per server process over the whole workload (all repeats, setup included).
        labels = sorted({lbl for k in kinds for lbl in results.get(k, {}).get("usage", {})})
        for lbl in labels:
            for field, unit in (("peak_rss_mb", "MB"), ("final_rss_mb", "MB"), ("cpu_s", "s")):
                vals = [results.get(k, {}).get("usage", {}).get(lbl, {}).get(field) for k in kinds]
                row = [f"{lbl} {field.replace('_mb', '').replace('_s', '').replace('_', ' ')} ({unit})"]
                row += ["n/a" if v is None else fmt(v) for v in vals]
                if ratio:
                    row.append(f"{vals[0] / vals[1]:.2f}" if all(vals) else "—")  # type: ignore[operator]
                out.append("| " + " | ".join(row) + " |")
        notes = [
            f"{KIND_LABEL[k]}: {s['metric']} [{s['size']}]: {n}"
            for k in kinds
            for s in results.get(k, {}).get("series", [])
            for n in s.get("notes", [])
        ]
        out += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(out)


def chart(name: str, title: str, results: dict[str, Any], kinds: list[str], path: Path) -> None:
    """One figure per workload: a panel per metric (sizes along x), a bar per server kind at the median
    with min-max whiskers, and the resource panels (peak RSS, CPU) at the end."""
    metrics: dict[str, str] = {}
    for metric, _size, unit in _rows(results, kinds):
        metrics.setdefault(metric, unit)
    panels = len(metrics) + 2
    cols = min(panels, 3)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.flat)
    width = 0.8 / len(kinds)
    for ax, (metric, unit) in zip(flat, metrics.items(), strict=False):
        sizes = [s for m, s, _u in _rows(results, kinds) if m == metric]
        for i, kind in enumerate(kinds):
            for x, size in enumerate(sizes):
                s = _lookup(results, kind, metric, size)
                pos = x + (i - (len(kinds) - 1) / 2) * width
                if ok(s) and not results.get(kind, {}).get("error"):
                    assert s is not None
                    v = s["values"]
                    med = statistics.median(v)
                    ax.bar(pos, med, width, color=COLOURS[kind], label=KIND_LABEL[kind] if x == 0 else None,
                           yerr=[[med - min(v)], [max(v) - med]], capsize=3)  # fmt: skip
                    ax.annotate(fmt(med), (pos, med), ha="center", va="bottom", fontsize=8,
                                xytext=(0, 2), textcoords="offset points")  # fmt: skip
                else:
                    ax.bar(pos, 0, width, color=COLOURS[kind], label=KIND_LABEL[kind] if x == 0 else None)
                    ax.annotate("FAILED", (pos, 0), ha="center", va="bottom", fontsize=8, color="red",
                                rotation=90, xytext=(0, 3), textcoords="offset points")  # fmt: skip
        ax.set_xticks(range(len(sizes)), [s or "" for s in sizes])
        better = _better(results, kinds, metric)
        ax.set_title(f"{metric} ({unit}, {better} is better)", fontsize=9)
        ax.legend(fontsize=8)
        ax.margins(y=0.15)
    resource_axes = flat[len(metrics) : len(metrics) + 2]
    for ax, (field, label) in zip(resource_axes, (("peak_rss_mb", "peak RSS (MB)"), ("cpu_s", "CPU (s)")),
                                  strict=True):  # fmt: skip
        labels = sorted({lbl for k in kinds for lbl in results.get(k, {}).get("usage", {})})
        for i, kind in enumerate(kinds):
            usage = results.get(kind, {}).get("usage", {})
            for x, lbl in enumerate(labels):
                v = usage.get(lbl, {}).get(field, 0.0)
                pos = x + (i - (len(kinds) - 1) / 2) * width
                ax.bar(pos, v, width, color=COLOURS[kind], label=KIND_LABEL[kind] if x == 0 else None)
                ax.annotate(fmt(v), (pos, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                            textcoords="offset points")  # fmt: skip
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(f"{label}, whole workload, lower is better", fontsize=9)
        ax.legend(fontsize=8)
        ax.margins(y=0.15)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"{name}: {title}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _better(results: dict[str, Any], kinds: list[str], metric: str) -> str:
    for kind in kinds:
        for s in results.get(kind, {}).get("series", []):
            if s["metric"] == metric:
                return str(s["better"])
    return "lower"
