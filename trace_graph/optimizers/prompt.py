"""Writing an optimizer's problem as sectioned text that stays within a character budget.

A problem is a list of ``Section``s (``#Code``, ``#Variables``, ...), each a list of entries (one
line of code, one value, one feedback text). Values are already cut to a per-value limit by whoever
builds the entries; this module cuts whole sections so the total fits: sections whose text is
smaller than a fair share keep everything, the big ones (the code and intermediate values of a
4,000-node graph) share what is left, and a cut section keeps its first and last entries around an
omission marker. The first entries are where the parameters are used, the last ones lead to the
output: both ends matter more than the middle of a long chain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from trace_graph.report import short_repr

# The share of the budget that priority sections (variables, feedback, ...) may take when the others
# also need room; without competition they may take all of it.
PRIORITY_SHARE = 0.6
_NONE = "(none)"
_SECTION_GAP = "\n\n"


@dataclass
class Section:
    """One ``#Title`` block of the problem."""

    title: str
    entries: list[str] = field(default_factory=list)
    priority: bool = False  # trimmed last: what the optimizer must see (variables, feedback)
    preamble: str | None = None  # one line under the title explaining the entries (never trimmed)

    def header(self) -> str:
        return f"#{self.title}" + (f"\n{self.preamble}" if self.preamble else "")


def _entries_size(entries: Sequence[str]) -> int:
    return sum(len(entry) + 1 for entry in entries)


def _water_fill(sizes: Sequence[int], total: int) -> list[int]:
    """Max-min fair shares of ``total``: small demands are met in full, big ones split the rest."""
    allocation = [0] * len(sizes)
    remaining = max(total, 0)
    order = sorted(range(len(sizes)), key=lambda index: sizes[index])
    for position, index in enumerate(order):
        share = remaining // (len(order) - position)
        allocation[index] = min(sizes[index], share)
        remaining -= allocation[index]
    return allocation


def fit_entries(entries: Sequence[str], limit: int) -> list[str]:
    """``entries`` cut to about ``limit`` characters: the first and last ones around a marker."""
    if _entries_size(entries) <= limit:
        return list(entries)
    count = len(entries)
    reserve = len(f"... ({count} of {count} entries omitted) ...") + 1
    head: list[str] = []
    tail: list[str] = []
    used = reserve
    low, high = 0, count - 1
    take_head = True
    while low <= high:
        candidate = entries[low] if take_head else entries[high]
        if used + len(candidate) + 1 > limit:
            break
        used += len(candidate) + 1
        if take_head:
            head.append(candidate)
            low += 1
        else:
            tail.append(candidate)
            high -= 1
        take_head = not take_head
    if not head and not tail and limit - reserve > 80:
        # Not even one entry fits whole (one long feedback text): keep both ends of the first one.
        head.append(short_repr(entries[0], limit - reserve - 40))
        low = 1
    omitted = high - low + 1
    if omitted <= 0:
        return head + tail[::-1]
    marker = f"... ({omitted} of {count} entries omitted) ..."
    return [*head, marker, *tail[::-1]]


def render_sections(sections: Sequence[Section], budget: int) -> str:
    """The sections as ``#Title`` blocks, at most ``budget`` characters in total."""
    fixed = sum(len(section.header()) + 1 + len(_SECTION_GAP) for section in sections)
    available = budget - fixed
    sizes = [_entries_size(section.entries or [_NONE]) for section in sections]
    priority = [index for index, section in enumerate(sections) if section.priority]
    others = [index for index, section in enumerate(sections) if not section.priority]
    others_demand = sum(sizes[index] for index in others)
    priority_cap = available - min(others_demand, int(available * (1 - PRIORITY_SHARE)))
    limits = [0] * len(sections)
    for index, share in zip(priority, _water_fill([sizes[i] for i in priority], priority_cap), strict=True):
        limits[index] = share
    left = available - sum(limits)
    for index, share in zip(others, _water_fill([sizes[i] for i in others], left), strict=True):
        limits[index] = share

    blocks = []
    for section, limit in zip(sections, limits, strict=True):
        entries = fit_entries(section.entries, limit) if section.entries else [_NONE]
        blocks.append(section.header() + "\n" + "\n".join(entries))
    text = _SECTION_GAP.join(blocks)
    if len(text) > budget:  # only when the budget is smaller than the section headers themselves
        text = short_repr(text, max(budget - 40, 0))
    return text


def split_sections(text: str, titles: Sequence[str]) -> dict[str, str]:
    """The body of each ``#Title`` block of ``text`` (for tools and tests that read a prompt back).

    Only the given titles count as headers, so ``#`` comments inside code stay in their section.
    """
    pattern = re.compile(rf"^#({'|'.join(re.escape(title) for title in titles)})[ \t]*$", re.MULTILINE)
    matches = list(pattern.finditer(text))
    sections: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        sections[match.group(1)] = text[match.end() : end].strip("\n")
    return sections
