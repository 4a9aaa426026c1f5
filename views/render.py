"""HTML pages and their PDF from one template, with the charts inline as SVG (issue #19 item 5).

Text and tables are HTML, so they wrap instead of being clipped and stay selectable in the PDF;
charts are matplotlib ``Figure`` objects (no pyplot state) written as inline SVG whose text
stays text. :func:`page` fills a Jinja2 template of ``views/templates`` (autoescaped);
:func:`write_pdf` lays the same HTML out on A4 with WeasyPrint.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure

mpl.rcParams.update({"svg.fonttype": "none", "font.size": 8, "font.family": "DejaVu Sans"})

WIDTH_IN = 6.9
"""A chart's width: A4 portrait less 2 × 15 mm of margin."""
INK, MUTED = "#263238", "#78909c"

_env = Environment(
    loader=PackageLoader("views", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def page(template: str, **context: Any) -> str:
    """The template filled with ``context`` (every name it uses must be given)."""
    return _env.get_template(template).render(**context)


def write_pdf(html: str, path: Path) -> None:
    """Lay ``html`` out as a PDF at ``path`` (the template's ``@page`` rules set size and margins).

    Raises:
        OSError: ``path`` cannot be written.
    """
    from weasyprint import HTML  # imported here: ~0.3 s, only for commands that write a PDF

    # Their INFO is per layout step, their WARNINGs the SVG style properties they skip: not news
    # for whoever asked for a report.
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    HTML(string=html, base_url=str(path.parent)).write_pdf(path)


_figures = itertools.count(1)
_ID = re.compile(r'\bid="([^"]+)"')


def svg(fig: Figure) -> Markup:
    """A figure as inline SVG markup (no XML prolog), its text kept as text.

    matplotlib names its elements alike in every figure (``text_10``, ``line2d_3``): each
    figure's ids and the references to them get a prefix of their own, so the page's ids stay
    unique when several charts share it.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    prefix = f"f{next(_figures)}-"
    for name in set(_ID.findall(text)):
        text = text.replace(f'id="{name}"', f'id="{prefix}{name}"')
        text = text.replace(f"url(#{name})", f"url(#{prefix}{name})")
        text = text.replace(f'href="#{name}"', f'href="#{prefix}{name}"')
    return Markup(text)


def _fig(height_in: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH_IN, height_in))
    ax = fig.subplots()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def bars(
    labels: Sequence[str], values: Sequence[float], colors: Sequence[str], ylabel: str
) -> Markup:
    """A labelled bar chart, each bar's value written above it."""
    fig, ax = _fig(1.7)
    ax.bar(list(labels), list(values), color=list(colors))
    for i, v in enumerate(values):
        ax.annotate(f"{v:g}", (i, v), ha="center", va="bottom", color=INK)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return svg(fig)


def time_bars(
    starts: Sequence[datetime], values: Sequence[float], width_s: float, ylabel: str, color: str
) -> Markup:
    """Bars over time (``starts`` in the zone the reader wants), one per bucket of ``width_s``."""
    from datetime import timedelta

    from matplotlib.dates import DateFormatter

    fig, ax = _fig(2.0)
    ax.bar(list(starts), list(values), width=timedelta(seconds=width_s * 0.9), align="edge",
           color=color)  # fmt: skip
    if starts:
        ax.set_xlim(min(starts), max(starts) + timedelta(seconds=width_s))
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=starts[0].tzinfo))  # type: ignore[no-untyped-call]
    ax.set_ylabel(ylabel)
    return svg(fig)


def pareto(names: Sequence[str], counts: Sequence[int]) -> Markup:
    """Reasons by count, most frequent first, with the cumulative share as a line (right axis)."""
    fig, ax = _fig(2.6)
    order = sorted(range(len(counts)), key=lambda i: -counts[i])
    names = [names[i] for i in order]
    counts = [counts[i] for i in order]
    ax.bar(names, counts, color="#6d4c41")
    ax.set_ylabel("trays")
    ax.tick_params(axis="x", labelrotation=25)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    total = sum(counts)
    if total:
        cum, run = [], 0
        for c in counts:
            run += c
            cum.append(100.0 * run / total)
        right = ax.twinx()
        right.plot(names, cum, color=INK, marker="o", markersize=3)
        right.set_ylim(0, 105)
        right.set_ylabel("cumulative %")
        right.spines["top"].set_visible(False)
    return svg(fig)


def mass_histogram(masses: Sequence[float], marks: Sequence[tuple[float, str, str]]) -> Markup:
    """Pack masses (g) with vertical marks (value, label, colour): Qn, T1, T2."""
    fig, ax = _fig(2.4)
    ax.hist(list(masses), bins=min(40, max(5, len(masses) // 10)), color=MUTED)
    for value, label, color in marks:
        ax.axvline(value, color=color, linestyle="--", linewidth=1)
        ax.annotate(f"{label} {value:g} g", (value, 0.97), xycoords=("data", "axes fraction"),
                    rotation=90, ha="right", va="top", color=color)  # fmt: skip
    ax.set_xlabel("mass (g)")
    ax.set_ylabel("packs")
    return svg(fig)


def control_chart(
    values: Sequence[float],
    centre: float,
    lcl: Sequence[float],
    ucl: Sequence[float],
    flagged: Sequence[bool],
    ylabel: str,
    first: int = 1,
) -> Markup:
    """A control chart: points joined in order, centre line, step limits, flagged points in red;
    ``first`` numbers the first point (a chart of the latest subgroups)."""
    fig, ax = _fig(2.0)
    x = list(range(first, first + len(values)))
    ax.plot(x, list(values), color=INK, marker="o", markersize=2.5, linewidth=0.8)
    ax.axhline(centre, color="#2e7d32", linewidth=0.8)
    ax.step(x, list(ucl), where="mid", color="#c62828", linewidth=0.8, linestyle="--")
    ax.step(x, list(lcl), where="mid", color="#c62828", linewidth=0.8, linestyle="--")
    bad = [i for i, f in enumerate(flagged) if f]
    if bad:
        ax.plot([x[i] for i in bad], [values[i] for i in bad], "o", color="#c62828", markersize=4)
    ax.set_xlabel("subgroup")
    ax.set_ylabel(ylabel)
    return svg(fig)
