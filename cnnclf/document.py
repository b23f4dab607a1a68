"""A document as a list of blocks, written as Markdown (PNGs linked beside it) and as one self-contained HTML file
(PNGs embedded, every text escaped), so the two always say the same: the report and a sweep's results.md."""

import base64
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path


def anchor(text: str) -> str:
    """The id GitHub gives a heading, so the contents' links work in both renderings."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _inline(text: str) -> str:
    """`code` spans and [text](#anchor) links, the only markup, as HTML."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))
    return re.sub(r"\[([^\]]+)\]\((#[\w\-]+)\)", r'<a href="\2">\1</a>', text)


@dataclass(frozen=True)
class Heading:
    text: str
    level: int

    def markdown(self, folder: Path) -> str:
        return f"{'#' * self.level} {self.text}"

    def html(self) -> str:
        return f'<h{self.level} id="{anchor(self.text)}">{escape(self.text)}</h{self.level}>'


@dataclass(frozen=True)
class Text:
    text: str

    def markdown(self, folder: Path) -> str:
        return self.text

    def html(self) -> str:
        return f"<p>{_inline(self.text)}</p>"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]

    def markdown(self, folder: Path) -> str:
        lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                 for row in [self.header, *self.rows]]
        return "\n".join([lines[0], "|" + " --- |" * len(self.header), *lines[1:]])

    def html(self) -> str:
        head = "".join(f"<th>{_inline(cell)}</th>" for cell in self.header)
        body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in self.rows)
        return f"<table><tr>{head}</tr>{body}</table>"


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG in the document's folder
    caption: str

    def markdown(self, folder: Path) -> str:
        return f"![{self.caption}]({self.path.relative_to(folder).as_posix()})\n\n*{self.caption}*"

    def html(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode()
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(self.caption)}">'
                f"<figcaption>{escape(self.caption)}</figcaption></figure>")


Block = Heading | Text | Table | Image

STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}code{background:#f3f3f3;
padding:0 3px}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}
h2{border-bottom:2px solid #ddd;margin-top:2em}h3{margin-top:1.5em}"""


def markdown(blocks: list[Block], folder: Path) -> str:
    return "\n\n".join(block.markdown(folder) for block in blocks) + "\n"


def html_page(blocks: list[Block], title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(block.html() for block in blocks)
            + "\n</body></html>\n")
