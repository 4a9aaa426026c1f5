"""The three operator dashboards: Line overview, Quality, Fleet and pipeline health.

See :mod:`views.boards.common` for what their SQL assumes, and :mod:`views.dashboards` for
the builder.
"""

from __future__ import annotations

from sqal.profiles import profile_names
from views.boards.common import ProfileTarget
from views.boards.fleet import fleet
from views.boards.line import line_overview
from views.boards.quality import quality
from views.dashboards import Board

__all__ = ["ProfileTarget", "build_boards", "fleet", "line_overview", "quality", "tne_g"]


def build_boards() -> list[Board]:
    """The three dashboards, with the targets of every profile in ``profiles/``."""
    targets = [ProfileTarget.load(name) for name in profile_names()]
    return [line_overview(), quality(targets), fleet()]
