"""The contact sheet a reviewer reads before a release: one self-contained HTML page.

No JavaScript at all (the page is shown in a sandboxed iframe, and its Content Security
Policy forbids scripts), inline CSS only, thumbnails by URL. Every text value is
HTML-escaped, attributes included: paths, OCR lines and facts come from files and
configuration, and none of them may turn into markup. Same input, same bytes.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["render_sheet"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src * data:; form-action 'none'"
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5rem;color:#1b1b1b;
background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .8rem}
h2{font-size:1.1rem;margin:1.2rem 0 .5rem}
table{border-collapse:collapse;margin:.3rem 0}
th,td{text-align:left;padding:.2rem .7rem;border-bottom:1px solid #ddd;vertical-align:top}
th{font-weight:600}
.decision{font-size:1.15rem;font-weight:700;padding:.6rem .9rem;border-radius:6px;
margin:.6rem 0 1rem;display:inline-block}
.decision.pending{background:#fff3cd;border:2px solid #c99a00}
.decision.made{background:#e3f1ff;border:2px solid #2f6fb3}
.counts{display:flex;flex-wrap:wrap;gap:2rem;align-items:flex-start}
caption{text-align:left;font-weight:600;white-space:nowrap;padding-bottom:.2rem}
.legend{margin:.8rem 0}
.swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;margin-right:.3em}
.swatch.box{border:2px solid #ff0000;background:transparent}
.swatch.overlay{background:#ffff00;border:1px solid #999}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1rem}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.7rem;
overflow-wrap:anywhere}
.card.flagged{border:3px solid #c00000;background:#fff1f1}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;background:#111;padding:4px;border-radius:4px}
.thumb{max-width:100%;height:auto;display:block}
.nothumb{color:#ddd;padding:1rem}
.path{font-family:ui-monospace,monospace;font-size:.85rem}
.verdict.passed{color:#17612a;font-weight:600}
.verdict.flagged{color:#c00000;font-weight:700}
.card p{margin:.35rem 0}
.card ul{margin:.2rem 0 .2rem 1.2rem;padding:0;font-family:ui-monospace,monospace;
font-size:.85rem}
"""


def render_sheet(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    facts: Sequence[tuple[str, str]],
    image_url: Callable[[str], str],
    decision: str | None = None,
) -> str:
    """The contact sheet of the images selected for review, as one HTML page.

    ``rows`` are the review rows the pipeline stores (output_path, modality, reason,
    at_risk, ok, values_checked, problems, frames, shown_frames, thumbnails, boxes,
    ocr_read, ocr_kept, overlays...); ``facts`` the (label, value) pairs of the header;
    ``image_url`` turns a thumbnail name into the URL the page loads it from;
    ``decision`` the reviewer's answer, None while it is pending.
    """
    ordered = sorted(rows, key=lambda r: (bool(r["ok"]), str(r["output_path"])))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _decision(decision),
        _facts(facts),
    ]
    if not ordered:
        parts.append('<p class="empty">No image was selected for review.</p>')
    else:
        parts += [_counts(ordered), _legend(), '<div class="grid">']
        parts += [_card(row, image_url) for row in ordered]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _e(value: object) -> str:
    """`value` as text safe in HTML content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def _decision(decision: str | None) -> str:
    """The reviewer's answer, or that it is still awaited."""
    if decision is None:
        return ('<p class="decision pending">Decision: pending, '
                "no reviewer has answered yet</p>")
    return f'<p class="decision made">Decision: {_e(decision)}</p>'


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    """The header table: batch, project, policy, review rule..."""
    body = "".join(f'<tr><th scope="row">{_e(label)}</th><td>{_e(value)}</td></tr>'
                   for label, value in facts)
    return f'<table class="facts">{body}</table>'


def _counts(rows: Sequence[Mapping[str, Any]]) -> str:
    """Images per modality, per verdict and per reason they were selected."""
    modalities = Counter(str(r["modality"]) or "(none)" for r in rows)
    flagged = sum(1 for r in rows if not r["ok"])
    reasons = Counter(str(r["reason"]) for r in rows)
    selection = [("at risk", sum(1 for r in rows if r["at_risk"])),
                 ("sampled", reasons.get("sample", 0))]
    if reasons.get("all"):
        selection.append(("all images", reasons["all"]))
    tables = [
        ("Images per modality", sorted(modalities.items())),
        ("Verdict", [("passed", len(rows) - flagged), ("flagged", flagged)]),
        ("Selected", selection),
    ]
    html_tables = "".join(
        f'<table class="count"><caption>{_e(caption)}</caption>'
        + "".join(f'<tr><th scope="row">{_e(k)}</th><td>{n}</td></tr>' for k, n in items)
        + "</table>"
        for caption, items in tables)
    return (f'<h2>{len(rows)} image{"s" if len(rows) != 1 else ""} to review</h2>'
            f'<div class="counts">{html_tables}</div>')


def _legend() -> str:
    """What the marks on the thumbnails mean."""
    return ('<p class="legend"><span class="swatch box"></span>red outlines: regions '
            'redacted from the pixels &nbsp; <span class="swatch overlay"></span>yellow: '
            "overlay graphics (kept in the file). First, middle and last frame shown.</p>")


def _card(row: Mapping[str, Any], image_url: Callable[[str], str]) -> str:
    """One image: its thumbnails, where it is, why it is shown and what the checks said."""
    ok = bool(row["ok"])
    frames = int(row["frames"])
    shown = [int(f) + 1 for f in row["shown_frames"]]
    alts = [f"frame {n} of {frames}" for n in shown]
    thumbs = "".join(
        f'<img class="thumb" src="{_e(image_url(str(name)))}" '
        f'alt="{_e(alts[i] if i < len(alts) else "thumbnail")}">'
        for i, name in enumerate(row["thumbnails"]))
    if not thumbs:  # why not: the pixels could not be decoded, or the output leaked
        thumbs = f'<p class="nothumb">{_e(row.get("shown") or "no thumbnail")}</p>'
    if ok:
        checked = int(row["values_checked"])
        verdict = f'<p class="verdict passed">passed: {checked} values checked</p>'
    else:
        leaks = int(row["leaks"])
        leak_note = f" ({leaks} leak{'s' if leaks != 1 else ''})" if leaks else ""
        verdict = (f'<p class="verdict flagged">flagged: {_e(row["problems"])}'
                   f"{leak_note}</p>")
    boxes, overlays = int(row["boxes"]), int(row["overlays"])
    return "\n".join([
        f'<article class="card {"passed" if ok else "flagged"}" '
        f'data-output-path="{_e(row["output_path"])}">',
        f'<div class="thumbs">{thumbs}</div>',
        f'<p class="frames">{_e(_frame_label(shown, frames))}</p>',
        f'<p class="path">{_e(row["output_path"])}</p>',
        f"<p>{_e(row['modality'])} · shard {int(row['shard'])} · "
        f"shown because: {_e(_reason(row))}</p>",
        verdict,
        f"<p>{boxes} region{'s' if boxes != 1 else ''} redacted · "
        f"{overlays} overlay plane{'s' if overlays != 1 else ''}</p>",
        _ocr(row),
        "</article>",
    ])


def _frame_label(shown: Sequence[int], frames: int) -> str:
    """'frames 1, 24, 48 of 48' (1-based numbers)."""
    numbers = ", ".join(str(f) for f in shown)
    return f"frame{'s' if len(shown) != 1 else ''} {numbers} of {frames}"


def _reason(row: Mapping[str, Any]) -> str:
    """Why the image is on the sheet, in words."""
    words = {"at-risk": "at risk of burned-in text", "sample": "sampled",
             "all": "every image is reviewed"}
    reason = str(row["reason"])
    text = words.get(reason, reason)
    if row["at_risk"] and reason != "at-risk":
        text += " (at risk of burned-in text)"
    return text


def _ocr(row: Mapping[str, Any]) -> str:
    """The text lines OCR read and kept in the image, or why there are none."""
    if not row["ocr_read"]:
        return '<p class="ocr">OCR: not read</p>'
    lines = [str(line) for line in row["ocr_kept"]]
    if not lines:
        return '<p class="ocr">OCR: no text kept</p>'
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<div class="ocr">OCR text kept in the image:<ul>{items}</ul></div>'
