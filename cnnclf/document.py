"""A document as a list of blocks, written as Markdown (PNGs linked beside it) and as one self-contained HTML file
(PNGs embedded), so the two always say the same: the report and a sweep's results.md."""

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int


@dataclass(frozen=True)
class Text:
    text: str  # `code` spans and [contents](#anchor) links are the only markup


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG in the document's folder
    caption: str


Block = Heading | Text | Table | Image


def anchor(text: str) -> str:
    """The id GitHub gives a heading, so the contents' links work in both renderings."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def markdown(blocks: list[Block], folder: Path) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                     for row in [block.header, *block.rows]]
            parts.append("\n".join([lines[0], "|" + " --- |" * len(block.header), *lines[1:]]))
        else:
            parts.append(f"![{block.caption}]({block.path.relative_to(folder).as_posix()})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
code{background:#f3f3f3;padding:0 3px}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}
h2{border-bottom:2px solid #ddd;margin-top:2em}h3{margin-top:1.5em}"""


def _inline(text: str) -> str:
    """`code` spans and [text](#anchor) links as HTML."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\[([^\]]+)\]\((#[\w\-]+)\)", r'<a href="\2">\1</a>', text)


def html_page(blocks: list[Block], title: str) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f'<h{block.level} id="{anchor(block.text)}">{html.escape(block.text)}</h{block.level}>')
        elif isinstance(block, Text):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in block.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
                           for row in block.rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
