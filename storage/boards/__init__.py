"""The three operator dashboards: Line overview, Quality, Fleet and pipeline health.

See :mod:`storage.boards.common` for what their SQL assumes, and :mod:`storage.dashboards` for
the builder.
"""

from __future__ import annotations

from sqal.profiles import profile_names
from storage.boards.common import ProfileTarget
from storage.boards.fleet import fleet
from storage.boards.line import line_overview
from storage.boards.quality import quality
from storage.dashboards import Board

__all__ = ["ProfileTarget", "build_boards", "fleet", "line_overview", "quality", "tne_g"]


def build_boards() -> list[Board]:
    """The three dashboards, with the targets of every profile in ``profiles/``."""
    targets = [ProfileTarget.load(name) for name in profile_names()]
    return [line_overview(), quality(targets), fleet()]
