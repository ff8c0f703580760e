"""Rich text in, safe HTML out: every note body passes through ``clean_rich_text``."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import nh3

ALLOWED_TAGS = {
    "p", "br", "div", "span", "b", "strong", "i", "em", "u", "s", "del", "strike",
    "ul", "ol", "li", "blockquote", "pre", "code", "h1", "h2", "h3", "h4", "a", "hr",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
URL_SCHEMES = {"http", "https", "mailto", "tel"}
_LOOKS_LIKE_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")
# Elements a browser knows, allowed or not: nh3 strips the ones not allowed. Anything else in
# angle brackets is text people write (<john@example.com>, <https://…>, plan <Pro>) and is kept.
HTML_ELEMENTS = frozenset("""
    a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption cite code col
    colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure font footer form
    frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link main
    map mark math menu meta meter nav noembed noframes noscript object ol optgroup option output p param picture
    plaintext pre progress q rp rt ruby s samp script search section select slot small source span strike strong
    style sub summary sup svg table tbody td template textarea tfoot th thead time title tr track tt u ul var video
    wbr xmp
""".split())
_TAG_START = re.compile(r"<(?!!--)(/?)\s*([A-Za-z][A-Za-z0-9-]*)?(?=([\s/>]?))")
_BLOCK_TAG = re.compile(r"<\s*/?\s*(p|br|div|ul|ol|li|blockquote|pre|h[1-6]|hr|table|tr)\b", re.IGNORECASE)


def _escape_non_tags(text: str) -> str:
    """Escape every ``<`` that does not open or close an HTML element (or a comment)."""

    def keep_or_escape(match: re.Match) -> str:
        name, after = match.group(2), match.group(3)
        if name and after and (name.lower() in HTML_ELEMENTS or "-" in name):
            return match.group(0)
        return "&lt;" + match.group(0)[1:]

    return _TAG_START.sub(keep_or_escape, text)


def _paragraphs(text: str, line: Callable[[str], str]) -> str:
    """Blank lines separate paragraphs; single line breaks stay line breaks."""
    return "".join(
        "<p>" + "<br>".join(line(part) for part in paragraph.strip().splitlines()) + "</p>"
        for paragraph in re.split(r"\n\s*\n", text)
        if paragraph.strip()
    )


def clean_rich_text(raw: str) -> str:
    """Return ``raw`` as sanitized HTML; plain text keeps its line breaks as paragraphs."""
    text = (raw or "").strip()
    if not text:
        return ""
    marked_up = _escape_non_tags(text)
    if not _LOOKS_LIKE_HTML.search(marked_up):
        text = _paragraphs(text, html.escape)
    elif "\n" in marked_up and not _BLOCK_TAG.search(marked_up):
        # Inline markup only (an agent's "<b>Hot lead</b>" on one of several lines): HTML
        # ignores the line breaks, so they become paragraphs and <br> as in plain text.
        text = _paragraphs(marked_up, str)
    else:
        text = marked_up
    return _sanitized(text)


def _sanitized(html_text: str) -> str:
    return nh3.clean(
        html_text,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()


def safe_stored_html(stored: str) -> str:
    """A stored note body, sanitized again for display: it is HTML already, so it is not read as plain text.

    Read as plain text, a body with no tags left ("&lt;/script&gt;", all that remained of a pasted
    script) was escaped a second time and showed its entity codes.
    """
    return _sanitized(stored or "")


def rich_text_to_plain(value: str) -> str:
    """Return the text of sanitized HTML (for previews, exports and search)."""
    without_tags = nh3.clean(re.sub(r"<(br|/p|/li|/div)\s*/?>", "\n", value or ""), tags=set())
    return html.unescape(without_tags).strip()
