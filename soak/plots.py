"""One SVG figure per series, drawn by matplotlib, with the chaos events marked on the time
axis and the warm-up shaded.

Owns the look of the report's charts and nothing else: series and events in, an SVG string
(no XML prolog, ready to inline) out. It must never read records or judge a series.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from soak.series import Series

plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller files, searchable
plt.rcParams["svg.hashsalt"] = "expressgateway-soak"  # stable ids for a stable report

EVENT_COLOURS = {
    "reload": "#1f77b4",
    "sighup": "#17becf",
    "worker_kill": "#d62728",
    "drain": "#9467bd",
    "backend_restart": "#ff7f0e",
    "health_flap": "#2ca02c",
    "invalid_reload": "#7f7f7f",
}
MAX_LEGEND_LINES = 12
_SCALE = {"bytes": (1024 * 1024, "MiB"), "s": (0.001, "ms")}


def svg(
    series: Series, events: Sequence[tuple[float, str]], steady_from_s: float, end_s: float
) -> str:
    divisor, unit = _SCALE.get(series.unit, (1.0, series.unit))
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=72)
    try:
        ax.axvspan(0, steady_from_s, color="#eeeeee", zorder=0)
        for label, points in series.lines.items():
            if not points:
                continue
            ts, vs = zip(*points, strict=True)
            ax.plot(
                ts,
                [v / divisor for v in vs],
                label=label,
                linewidth=2.0 if label == series.judged else 1.0,
            )
        kinds_seen = []
        for at_s, kind in events:
            ax.axvline(at_s, color=EVENT_COLOURS.get(kind, "black"), linestyle=":", linewidth=1)
            if kind not in kinds_seen:
                kinds_seen.append(kind)
        ax.set_xlim(0, max(end_s, 1.0))
        ax.set_xlabel("seconds since start (grey: warm-up, not judged)")
        ax.set_ylabel(unit)
        ax.set_title(series.title, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        for kind in kinds_seen:
            handles.append(Line2D([], [], color=EVENT_COLOURS.get(kind, "black"), linestyle=":"))
            labels.append(kind)
        if len(series.lines) > MAX_LEGEND_LINES:  # one line per process: colours, no legend
            keep = len(handles) - len(kinds_seen)
            handles, labels = handles[keep:], labels[keep:]
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    finally:
        plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]
