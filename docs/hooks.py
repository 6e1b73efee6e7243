"""MkDocs hooks: pages that show generated text.

- ``<!-- results:benchmarks -->`` becomes the table of ``results/benchmarks.json`` (the one place
  the current headline figures are written; ``BENCHMARKS.md`` is rendered from it too).
- ``<!-- cli:reference -->`` becomes every ``diamond-env`` command's ``--help``, taken from the
  parser itself, so the reference cannot fall behind the code.

``python docs/hooks.py`` rewrites ``BENCHMARKS.md``; ``--check`` exits 1 when it is out of date.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmarks.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def benchmarks_table(link_prefix: str = "") -> str:
    """The headline table as markdown; page links are relative to ``docs/`` plus ``link_prefix``."""
    rows = json.loads(RESULTS.read_text(encoding="utf-8"))["rows"]
    lines = [
        "| topic | what | figure | baseline (same run) | command | machine, date | details |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["topic"],
            r["what"],
            f"**{r['figure']}**",
            r["baseline"],
            f"`{r['command']}`",
            f"{r['machine']}, {r['date']}",
            f"[log]({link_prefix}{r['page']})",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def benchmarks_md() -> str:
    """The text of ``BENCHMARKS.md`` (the repository's front page for figures)."""
    return (
        "# Benchmarks\n\n"
        "<!-- Rendered from results/benchmarks.json by `python docs/hooks.py`; edit that file. -->\n\n"
        "Current figures, each beside the baseline measured in the same run. The chronological "
        "log with every study, its commands and its tables is "
        "[docs/studies/benchmarks-log.md](docs/studies/benchmarks-log.md); the manual's page is "
        "[docs/benchmarks.md](docs/benchmarks.md).\n\n" + benchmarks_table("docs/")
    )


def cli_reference() -> str:
    """Every command's ``--help`` as markdown, from ``diamond_env.cli.main.build_parser``."""
    from diamond_env.cli.main import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        buf = io.StringIO()
        with redirect_stdout(buf):
            command.print_help()
        parts += [f"## `diamond-env {name}`", "", "```text", buf.getvalue().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:  # MkDocs hook
    if "<!-- results:benchmarks -->" in markdown:
        markdown = markdown.replace("<!-- results:benchmarks -->", benchmarks_table())
    if "<!-- cli:reference -->" in markdown:
        markdown = markdown.replace("<!-- cli:reference -->", cli_reference())
    return markdown


if __name__ == "__main__":
    text = benchmarks_md()
    if sys.argv[1:] == ["--check"]:
        if BENCHMARKS_MD.read_text(encoding="utf-8") != text:
            print("BENCHMARKS.md is out of date: python docs/hooks.py")
            sys.exit(1)
    else:
        BENCHMARKS_MD.write_text(text, encoding="utf-8")
