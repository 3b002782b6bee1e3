"""Replace one marked section of a markdown file (the benchmark scripts each own one)."""

from __future__ import annotations

from pathlib import Path


def write_section(markdown: Path, begin: str, end: str, section: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) where the old one
    was, or append it; the rest of the file is left as it is."""
    text = markdown.read_text() if markdown.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    markdown.write_text(text)
