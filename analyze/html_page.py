"""report.html: report.md as one self-contained page (figures inlined as data URIs, sortable tables, no network).

The page is rendered from the same markdown as report.md, so the two never disagree. Only the markdown the
report writes is understood: ``#``/``##``/``###`` headings, paragraphs, ``- `` lists (nested by two spaces),
pipe tables, images alone on a line, and inline ``**bold**``, ``*italic*``, `` `code` `` and links.
A Content-Security-Policy forbids every fetch: the page loads nothing, even when opened from a server.
Standard library only.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)$")
_LIST = re.compile(r"^(?P<indent> *)- (?P<text>.*)$")
_INLINE = re.compile(r"\*\*(?P<bold>.+?)\*\*|(?<![\w*])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"
                     r"|\[(?P<label>[^\]]+)\]\((?P<href>[^)\s]+)\)")
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1.5rem 4rem; color: #222; }
nav { border: 1px solid #ddd; background: #fafafa; padding: .5rem 1rem; margin: 1rem 0; }
nav ol { margin: .3rem 0; padding-left: 1.4rem; columns: 2; }
h1 { margin-top: 1.5rem; } h2 { border-bottom: 1px solid #ddd; margin-top: 2.5rem; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
.scroll { overflow-x: auto; margin: .8rem 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #666; }
"""

# Sorts a table by the clicked column: numerically when every filled cell starts with a number ("85.1 [84.0,
# 86.2]" sorts as 85.1), as text otherwise; empty cells and "—" always last; a second click reverses.
SCRIPT = r"""
(function () {
  "use strict";
  var NUMBER = /^[+\-\u2212]?(\d+\.?\d*|\.\d+)(e[+\-]?\d+)?/i;
  function text(row, col) { var c = row.cells[col]; return c ? c.textContent.trim() : ""; }
  function blank(t) { return t === "" || t === "\u2014"; }
  function number(t) { var m = NUMBER.exec(t); return m ? parseFloat(m[0].replace("\u2212", "-")) : NaN; }
  function sortBy(table, col, th) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var filled = rows.map(function (r) { return text(r, col); }).filter(function (t) { return !blank(t); });
    var numeric = filled.length > 0 && filled.every(function (t) { return !isNaN(number(t)); });
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var keyed = rows.map(function (r, i) { var t = text(r, col); return {row: r, i: i, t: t, v: numeric ? number(t) : t}; });
    keyed.sort(function (a, b) {
      var ea = blank(a.t), eb = blank(b.t);
      if (ea || eb) { return ea === eb ? a.i - b.i : (ea ? 1 : -1); }
      var d = numeric ? a.v - b.v : a.v.localeCompare(b.v, undefined, {numeric: true});
      return d !== 0 ? dir * d : a.i - b.i;
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    keyed.forEach(function (k) { body.appendChild(k.row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort";
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); }
      });
    });
  });
})();
"""


def _inline(text: str) -> str:
    """Inline markdown of one line of text as escaped HTML (code spans are taken literally)."""
    out = []
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        pos = 0
        for m in _INLINE.finditer(part):
            out.append(html.escape(part[pos:m.start()]))
            if m["bold"] is not None:
                out.append(f"<strong>{_inline(m['bold'])}</strong>")
            elif m["em"] is not None:
                out.append(f"<em>{_inline(m['em'])}</em>")
            else:
                out.append(f'<a href="{html.escape(m["href"])}">{_inline(m["label"])}</a>')
            pos = m.end()
        out.append(html.escape(part[pos:]))
    return "".join(out)


def slug(title: str, taken: set[str]) -> str:
    """A unique element id for a heading."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _table(lines: list[str]) -> str:
    header, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in header)
    rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _list(lines: list[str]) -> str:
    out, depth = [], -1
    for line in lines:
        m = _LIST.match(line)
        level = len(m["indent"]) // 2
        if level > depth:
            out.append("<ul><li>" * (level - depth))
        else:
            out.append("</li></ul>" * (depth - level) + "</li><li>")
        out.append(_inline(m["text"]))
        depth = level
    out.append("</li></ul>" * (depth + 1))
    return "".join(out)


def data_uri(path: Path) -> str:
    """The file as a ``data:`` URI (its bytes base64-encoded)."""
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: figure of unknown type (expected one of {', '.join(sorted(_MIME))})")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _figure(alt: str, src: str, root: Path) -> str:
    path = root / src
    if not path.is_file():
        raise ValueError(f"{path}: figure named in report.md ({src}) not found")
    return (f'<figure><img alt="{html.escape(alt)}" src="{data_uri(path)}">'
            f"<figcaption>{html.escape(src)}</figcaption></figure>")


def body_html(markdown: str, root: Path) -> tuple[str, list[tuple[str, str]]]:
    """The page body for ``markdown`` and its ``(id, title)`` second-level headings; figures are read from
    paths relative to ``root``."""
    blocks, sections, taken = [], [], set()
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = re.match(r"^(#{1,3}) (.*)$", line)
        if heading:
            level, title = len(heading[1]), heading[2].strip()
            ident = slug(title, taken)
            if level == 2:
                sections.append((ident, title))
            blocks.append(f'<h{level} id="{ident}">{_inline(title)}</h{level}>')
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].strip() and not re.match(r"^#{1,3} ", lines[j]):
            j += 1
        chunk = lines[i:j]
        if chunk[0].lstrip().startswith("|") and len(chunk) >= 2 and set(chunk[1].replace("|", "").strip()) <= set("-: "):
            blocks.append(_table(chunk))
        elif all(_LIST.match(c) for c in chunk):
            blocks.append(_list(chunk))
        elif len(chunk) == 1 and _IMAGE.match(chunk[0].strip()):
            m = _IMAGE.match(chunk[0].strip())
            blocks.append(_figure(m["alt"], m["src"], root))
        else:
            blocks.append("<p>" + " ".join(_inline(c.strip()) for c in chunk) + "</p>")
        i = j
    return "\n".join(blocks), sections


def render(markdown: str, root: Path, title: str = "Beyond ImageNet accuracy: report") -> str:
    """The whole page: contents, the report, inline CSS and the sorting script."""
    body, sections = body_html(markdown, root)
    contents = "".join(f'<li><a href="#{ident}">{_inline(t)}</a></li>' for ident, t in sections)
    nav = f'<nav aria-label="contents"><strong>Contents</strong><ol>{contents}</ol></nav>' if sections else ""
    # The contents go right after the title, before the first section.
    first = body.find("<h2")
    body = body + nav if first < 0 else body[:first] + nav + "\n" + body[first:]
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")


def write_page(out_dir: Path, markdown: str) -> Path:
    """Write ``report.html`` beside report.md in ``out_dir`` (figures read from there)."""
    path = Path(out_dir) / "report.html"
    path.write_text(render(markdown, Path(out_dir)), encoding="utf-8")
    return path
