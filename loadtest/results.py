"""The one results writer of the benchmarks and the soak: a row in a table of docs/benchmarks.md, and the full
report under loadtest/results/ (JSON, and the markdown a benchmark printed)."""

import json
import time
from pathlib import Path

from runtime.torchserve import REPO

BENCHMARKS = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "loadtest" / "results"


def result_dir(name: str) -> Path:
    """A new folder for one run's files: loadtest/results/<time>-<name>/."""
    folder = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_report(name: str, report: dict, text: str | None = None, path: Path | None = None) -> Path:
    """``report`` as JSON (and ``text``, the printed markdown, beside it) in loadtest/results/<time>-<name>.json, or at
    ``path``; returns the JSON's path."""
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if text is not None:
        path.with_suffix(".md").write_text(text.rstrip("\n") + "\n")
    return path


def append_table_row(benchmarks: Path, section: str, header: str, row: str) -> None:
    """Add ``row`` at the end of the table that ``header`` opens under ``section`` of ``benchmarks``; the section and
    its table are made if missing."""
    text = benchmarks.read_text() if benchmarks.exists() else "# Benchmarks\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n"
    start = text.index(section)
    lines = text[start:].split("\n")
    section_end = next((i for i, line in enumerate(lines) if i and line.startswith("## ")), len(lines))
    opening = header.split("\n")[0]
    if opening not in lines[:section_end]:  # a new table at the section's end (other tables may share the section)
        while section_end > 1 and not lines[section_end - 1].strip():
            section_end -= 1
        lines[section_end:section_end] = ["", *header.split("\n")]  # the blank lines it stepped back over follow it
    table_end = lines.index(opening)
    while table_end + 1 < len(lines) and lines[table_end + 1].startswith("|"):
        table_end += 1
    lines.insert(table_end + 1, row)
    benchmarks.write_text(text[:start] + "\n".join(lines))
