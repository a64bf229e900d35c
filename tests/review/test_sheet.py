"""The contact sheet: escaped everywhere, no script, counts, order, thumbnails by URL."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from dicom_deid.review.sheet import render_sheet

ATTACK = '"><img src=x onerror=alert(1)>'
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table",
                "caption", "tr", "th", "td", "div", "article", "img", "ul", "li", "span"}


def _row(path: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "output_path": path, "shard": 0, "modality": "CT", "reason": "sample",
        "at_risk": False, "ok": True, "leaks": 0, "values_checked": 120, "problems": "",
        "frames": 1, "shown_frames": [0], "thumbnails": [f"{path}#0.png"], "boxes": 0,
        "ocr_read": False, "ocr_kept": [], "overlays": 0,
    }
    row.update(changes)
    return row


def _url(name: str) -> str:
    return f"/review/thumb?name={name}&v=1"


def _sheet(rows: list[dict[str, Any]], **changes: Any) -> str:
    options: dict[str, Any] = {"title": "Review of batch b1", "facts": [("batch", "b1")],
                               "image_url": _url, "decision": None}
    options.update(changes)
    return render_sheet(rows, **options)


class _Tags(HTMLParser):
    """Every start tag with its attributes (values unescaped, as a browser sees them)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def all(self, tag: str, attr: str) -> list[str | None]:
        return [a.get(attr) for t, a in self.tags if t == tag]


def _cards(text: str) -> list[str | None]:
    return _Tags(text).all("article", "data-output-path")


def test_every_value_is_escaped_and_nothing_becomes_markup() -> None:
    rows = [
        _row("<script>x</script>", ok=False, problems="<b>PatientName</b> & more",
             ocr_read=True, ocr_kept=[ATTACK, "<script>alert(2)</script>"],
             modality="<i>CT</i>", thumbnails=['a"b.png']),
        _row('x" onmouseover="alert(3)', thumbnails=[ATTACK]),
    ]
    text = _sheet(rows, title="<script>t</script>", facts=[("<b>", ATTACK)],
                  decision="approved by <script>eve</script>")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;x&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    parsed = _Tags(text)
    assert {tag for tag, _ in parsed.tags} <= ALLOWED_TAGS
    assert not [name for _, attrs in parsed.tags for name in attrs if name.startswith("on")]
    assert len(parsed.all("img", "src")) == 2  # the attack line is text, not an image
    assert _cards(text) == ["<script>x</script>", 'x" onmouseover="alert(3)']
    assert parsed.all("img", "src") == [_url('a"b.png'), _url(ATTACK)]


def test_no_script_in_any_sheet() -> None:
    pages = [
        _sheet([]),
        _sheet([_row("a.dcm")], decision="approved by alice: looked fine"),
        _sheet([_row("a.dcm", ok=False, problems="PatientName kept", leaks=2)]),
    ]
    for page in pages:
        assert "<script" not in page.lower()
        assert "javascript:" not in page.lower()
        assert page.startswith("<!DOCTYPE html>")


def test_thumbnails_are_loaded_through_image_url_in_shown_order() -> None:
    rows = [_row("b.dcm", frames=48, shown_frames=[0, 23, 47],
                 thumbnails=["b-0.png", "b-23.png", "b-47.png"]),
            _row("a.dcm")]
    text = _sheet(rows)
    parsed = _Tags(text)
    assert parsed.all("img", "src") == [_url(n) for n in
                                        ("a.dcm#0.png", "b-0.png", "b-23.png", "b-47.png")]
    assert [a.get("class") for t, a in parsed.tags if t == "img"] == ["thumb"] * 4
    assert "&amp;v=1" in text  # the URL is escaped in the attribute
    assert "frames 1, 24, 48 of 48" in text and "frame 1 of 1" in text
    assert parsed.all("img", "alt")[1:] == ["frame 1 of 48", "frame 24 of 48",
                                            "frame 48 of 48"]


def test_flagged_images_come_first_then_by_path() -> None:
    rows = [_row("c.dcm"), _row("b.dcm", ok=False, problems="p"), _row("a.dcm"),
            _row("d.dcm", ok=False, problems="q")]
    text = _sheet(rows)
    assert _cards(text) == ["b.dcm", "d.dcm", "a.dcm", "c.dcm"]
    classes = [a.get("class") for t, a in _Tags(text).tags if t == "article"]
    assert classes == ["card flagged", "card flagged", "card passed", "card passed"]


def _count(text: str, caption: str, label: str) -> int:
    table = re.search(rf"<caption>{caption}</caption>(.*?)</table>", text)
    assert table, caption
    cell = re.search(rf'<th scope="row">{label}</th><td>(\d+)</td>', table.group(1))
    assert cell, (caption, label)
    return int(cell.group(1))


def test_counts_per_modality_verdict_and_reason() -> None:
    rows = [_row("1", modality="CT", reason="at-risk", at_risk=True, ok=False, problems="x"),
            _row("2", modality="CT"), _row("3", modality="MR", at_risk=True),
            _row("4", modality="US", reason="at-risk", at_risk=True), _row("5", modality="CT"),
            _row("6", modality="", ok=False, problems="y")]
    text = _sheet(rows)
    assert "6 images to review" in text
    assert [_count(text, "Images per modality", m) for m in ("CT", "MR", "US", r"\(none\)")] \
        == [3, 1, 1, 1]
    assert (_count(text, "Verdict", "passed"), _count(text, "Verdict", "flagged")) == (4, 2)
    assert (_count(text, "Selected", "at risk"), _count(text, "Selected", "sampled")) == (3, 4)


def test_a_card_says_what_was_checked_redacted_and_read() -> None:
    passed = _sheet([_row("a.dcm", boxes=3, overlays=1, ocr_read=True,
                          ocr_kept=["R", "L 5 cm"])])
    assert "passed: 120 values checked" in passed
    assert "3 regions redacted" in passed and "1 overlay plane<" in passed
    assert "<li>R</li><li>L 5 cm</li>" in passed
    flagged = _sheet([_row("a.dcm", ok=False, leaks=2, problems="PatientName kept",
                           boxes=1, ocr_read=True)])
    assert "flagged: PatientName kept (2 leaks)" in flagged
    assert "1 region redacted" in flagged and "OCR: no text kept" in flagged
    assert "OCR: not read" in _sheet([_row("a.dcm")])
    assert "red outlines" in passed and "yellow" in passed


def test_decision_pending_or_given_and_facts() -> None:
    pending = _sheet([_row("a.dcm")], facts=[("project", "p1"), ("review rule", "at-risk")])
    assert "Decision: pending" in pending
    assert '<th scope="row">review rule</th><td>at-risk</td>' in pending
    given = _sheet([_row("a.dcm")], decision="approved by alice: fine")
    assert "Decision: approved by alice: fine" in given and "Decision: pending" not in given


def test_no_rows_says_nothing_was_selected() -> None:
    text = _sheet([])
    assert "No image was selected for review" in text
    assert _cards(text) == [] and "<img" not in text


def test_same_rows_same_page_whatever_their_order() -> None:
    rows = [_row("b.dcm", ok=False, problems="p"), _row("a.dcm"), _row("c.dcm")]
    assert _sheet(rows) == _sheet(list(reversed(rows)))
