"""Reading the report pages back: the SVG plots, their ticks and labels, the table cells,
and anything that would make a page depend on more than itself."""

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

SVG = "{http://www.w3.org/2000/svg}"


def plots(page: str, kind: str) -> list[ET.Element]:
    """Every ``<svg class="plot KIND">`` of the page, parsed (so each must be well-formed)."""
    return [ET.fromstring(s) for s in re.findall(rf'<svg class="plot {kind}".*?</svg>', page)]


def texts(svg: ET.Element, cls: str) -> list[str]:
    """The text of every ``<text class="CLS">`` in document order."""
    return [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == cls]


def tick_marks(svg: ET.Element, axis: str) -> list[float]:
    """Pixel position of each tick mark on ``axis`` ("x" or "y"), in document order."""
    key = "x1" if axis == "x" else "y1"
    return [float(t.get(key, "nan")) for t in svg.iter(f"{SVG}line")
            if t.get("class") == f"tick {axis}"]


def polyline_points(svg: ET.Element) -> list[list[tuple[float, float]]]:
    return [[tuple(float(v) for v in p.split(",")) for p in line.get("points", "").split()]
            for line in svg.iter(f"{SVG}polyline")]


def cells(page: str, row_id: str) -> list[str]:
    """The text of each ``<td>`` in the table row with ``id=row_id``."""
    row = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', page)
    assert row, row_id
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]


class _Outside(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "link", "img", "iframe", "object", "embed"):
            self.found.append(f"<{tag}>")
        self.found += [f"{tag} {k}={v}" for k, v in attrs
                       if k in ("src", "href", "xlink:href") or (v or "").startswith("http")
                       and k != "xmlns"]


def external_parts(page: str) -> list[str]:
    """Scripts and references to other files or addresses: a self-contained page has none."""
    parser = _Outside()
    parser.feed(page)
    return parser.found
