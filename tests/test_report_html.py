"""report.html (analyze/html_page.py): report.md as one self-contained page, checked as text and in headless
Chromium (tests/browser.py): it renders without console errors, loads nothing but itself, shows every section
of report.md with its figures decoded, and its tables sort when a header is clicked.

Chromium is Debian's ``chromium`` package; test.sh installs it when missing (scripts/browser.sh). Where it
cannot be had, the browser tests skip and say why; the text checks run everywhere.
"""
from __future__ import annotations

import base64
import html
import re

import pytest

from analyze.html_page import render, write_page
from analyze.report import build_report
from analyze.synthetic import build_synthetic_store
from browser import Browser, find_chromium

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report over a small synthetic store with features (every study has data, agreement has CKA)."""
    base = tmp_path_factory.mktemp("html")
    store = build_synthetic_store(base / "store.zarr", seed=0, transforms=("center", "scale-1.5"), feature_dim=8,
                                  sizes={"imagenet-val": 200, "imagenet-r": 60, "cue-conflict": 160, "pug-imagenet": 80})
    build_report(store, base / "out", n_boot=20, seed=0, progress=False)
    out = base / "out"
    return dict(out=out, md=(out / "report.md").read_text(), page=(out / "report.html").read_text())


def sections(markdown: str) -> list[str]:
    return [line[3:].strip() for line in markdown.splitlines() if line.startswith("## ")]


def test_every_section_heading_table_and_figure_is_in_the_page(report):
    page, md = report["page"], report["md"]
    titles = sections(md)
    assert len(titles) >= 9 and any(t.startswith("Agreement") for t in titles)
    found = [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<h2 id=\"[^\"]+\">(.*?)</h2>", page)]
    assert found == titles
    # One <table> per markdown table (a header row followed by a |---| row), every one sortable.
    n_tables = len(re.findall(r"^\|[-|: ]+\|$", md, flags=re.M))
    assert page.count("<table") == page.count('<table class="sortable">') == n_tables > 5
    # Each figure of report.md is inlined, byte for byte.
    figures = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", md, flags=re.M)
    sources = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == len(figures) > 5
    for path, data in zip(figures, sources):
        assert base64.b64decode(data) == (report["out"] / path).read_bytes()


def test_the_page_loads_nothing(report):
    page = report["page"]
    assert "default-src 'none'" in page  # the Content-Security-Policy forbids every fetch
    srcs = re.findall(r'\b(?:src|href)="([^"#][^"]*)"', page)
    assert srcs and all(s.startswith("data:") for s in srcs), [s[:60] for s in srcs if not s.startswith("data:")]
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_markdown_is_escaped_and_inline_forms_render(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(PNG + b"rest")
    md = ("# Title\n\nStore: `<b>x</b>` and **bold <i>** and *em*\n\n## Part & whole\n\n"
          "- one\n  - nested `code`\n- two\n\n| a | b |\n|---|---|\n| 1 \\| 2 | <script>x</script> |\n\n"
          "![a](figures/a.png)\n")
    page = render(md, tmp_path)
    assert "<code>&lt;b&gt;x&lt;/b&gt;</code>" in page and "<strong>bold &lt;i&gt;</strong>" in page
    assert "<em>em</em>" in page and '<h2 id="part-whole">Part &amp; whole</h2>' in page
    assert "<ul><li>one<ul><li>nested <code>code</code></li></ul></li><li>two</li></ul>" in page
    assert "<td>1 | 2</td><td>&lt;script&gt;x&lt;/script&gt;</td>" in page
    assert page.count("<script>") == 1  # the page's own sorting script only
    assert f'src="data:image/png;base64,{base64.b64encode(PNG + b"rest").decode()}"' in page
    assert '<a href="#part-whole">Part &amp; whole</a>' in page  # the contents


def test_a_missing_figure_is_named_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"figures/gone\.png.*not found"):
        write_page(tmp_path, "# T\n\n![gone](figures/gone.png)\n")
    assert not (tmp_path / "report.html").exists()


# -- in the browser ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium; test.sh does it "
                    "when run as root) or set CHROMIUM to a Chromium/Chrome binary")
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def opened(browser, report):
    browser.open(report["out"] / "report.html")
    return browser


def test_renders_without_console_errors_or_network(opened, report):
    assert opened.problems() == []
    page = (report["out"] / "report.html").resolve().as_uri()
    requests = opened.requests()
    assert page in requests and all(u == page or u.startswith("data:") for u in requests), \
        [u[:80] for u in requests if u != page and not u.startswith("data:")]


def test_shows_every_section_with_its_figures(opened, report):
    shown = opened.evaluate("""Array.from(document.querySelectorAll('h2')).map(h => {
        const r = h.getBoundingClientRect(); return [h.textContent, r.width > 0 && r.height > 0]; })""")
    assert [t for t, _ in shown] == sections(report["md"]) and all(visible for _, visible in shown)
    images = opened.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == len(re.findall(r"^!\[", report["md"], flags=re.M))
    assert all(done and w > 100 and h > 100 for done, w, h in images), images
    links = opened.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => "
                            "document.getElementById(a.getAttribute('href').slice(1)) !== null)")
    assert len(links) == len(shown) and all(links)


def _column(browser, table: int, col: int) -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll('table')[{table}].tBodies[0].rows)"
                            f".map(r => r.cells[{col}].textContent.trim())")


def _click(browser, table: int, col: int) -> str:
    return browser.evaluate(f"(() => {{ const th = document.querySelectorAll('table')[{table}].tHead.rows[0]"
                            f".cells[{col}]; th.click(); return th.getAttribute('aria-sort'); }})()")


def _number(text: str) -> float:
    return float(re.match(r"[+-]?\d*\.?\d+", text).group())


def test_tables_sort_by_number_and_text(opened):
    tables = opened.evaluate("Array.from(document.querySelectorAll('table')).map(t => t.tHead.rows[0].cells[0].textContent)")
    table = tables.index("model A")  # the first agreement table: kappa "0.073 [-0.008, 0.186]" cells
    rows_before = sorted(opened.evaluate(f"Array.from(document.querySelectorAll('table')[{table}].tBodies[0].rows)"
                                         f".map(r => r.textContent)"))
    assert _click(opened, table, 2) == "ascending"
    values = [_number(t) for t in _column(opened, table, 2)]
    assert values == sorted(values) and len(set(values)) > 1
    assert _click(opened, table, 2) == "descending"
    values = [_number(t) for t in _column(opened, table, 2)]
    assert values == sorted(values, reverse=True)
    assert _click(opened, table, 1) == "ascending"  # text column
    names = _column(opened, table, 1)
    assert names == sorted(names)
    after = sorted(opened.evaluate(f"Array.from(document.querySelectorAll('table')[{table}].tBodies[0].rows)"
                                   f".map(r => r.textContent)"))
    assert after == rows_before  # rows move whole
    # Cells without a value ("—": ImageNet-X factors no synthetic image has) stay last in both directions.
    factors = tables.index("factor")
    assert "—" in _column(opened, factors, 1)
    for direction in ("ascending", "descending"):
        assert _click(opened, factors, 1) == direction
        cells = _column(opened, factors, 1)
        filled = [c for c in cells if c != "—"]
        assert cells[:len(filled)] == filled and set(cells[len(filled):]) == {"—"}
        values = [_number(c) for c in filled]
        assert values == sorted(values, reverse=direction == "descending")
    assert opened.problems() == []
