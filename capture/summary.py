"""``sqal capture info``: what a capture holds, per topic."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.fileformat import CaptureReader


@dataclass
class TopicStats:
    messages: int = 0
    bytes: int = 0


@dataclass
class CaptureSummary:
    """Totals of one or more capture files (a rotated capture reads as one)."""

    files: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0
    retained: int = 0
    first_offset_s: float | None = None
    last_offset_s: float = 0.0
    corrupt: int = 0
    torn_tail: bool = False
    topics: dict[str, TopicStats] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return 0.0 if self.first_offset_s is None else self.last_offset_s - self.first_offset_s

    @property
    def rate_per_s(self) -> float:
        return self.messages / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "meta": self.meta,
            "messages": self.messages,
            "bytes": self.bytes,
            "retained": self.retained,
            "duration_s": round(self.duration_s, 6),
            "rate_per_s": round(self.rate_per_s, 3),
            "corrupt_records": self.corrupt,
            "torn_tail": self.torn_tail,
            "topics": {
                t: {"messages": s.messages, "bytes": s.bytes}
                for t, s in sorted(self.topics.items())
            },
        }


def summarise(paths: list[Path]) -> CaptureSummary:
    """Read every record once and total it.

    Raises:
        CaptureError: a file is not a capture or is of a newer format.
    """
    out = CaptureSummary()
    for path in paths:
        reader = CaptureReader(path)
        out.files.append(str(path))
        if not out.meta:
            out.meta = dict(reader.meta)
        for rec in reader:
            if out.first_offset_s is None:
                out.first_offset_s = rec.offset_s
            out.last_offset_s = max(out.last_offset_s, rec.offset_s)
            out.messages += 1
            out.bytes += len(rec.payload)
            out.retained += int(rec.retain)
            t = out.topics.setdefault(rec.topic, TopicStats())
            t.messages += 1
            t.bytes += len(rec.payload)
        out.corrupt += reader.stats.corrupt
        out.torn_tail = out.torn_tail or reader.stats.torn_tail
    return out


def render(summary: CaptureSummary) -> str:
    """A human summary: header lines, then a table of topics by message count."""
    lines = [
        f"files      {', '.join(summary.files)}",
        f"broker     {summary.meta.get('broker', '?')}  topics {summary.meta.get('topics', '?')}",
        f"messages   {summary.messages:,} ({summary.retained:,} retained)  bytes {summary.bytes:,}",
        f"duration   {summary.duration_s:.3f} s  rate {summary.rate_per_s:,.1f} msg/s",
    ]
    if summary.corrupt or summary.torn_tail:
        lines.append(
            f"damage     {summary.corrupt} corrupt record(s) skipped"
            + ("; torn last record skipped" if summary.torn_tail else "")
        )
    lines.append(f"{'messages':>10} {'bytes':>12}  topic")
    for topic, s in sorted(summary.topics.items(), key=lambda kv: (-kv[1].messages, kv[0])):
        lines.append(f"{s.messages:>10,} {s.bytes:>12,}  {topic}")
    return "\n".join(lines)
