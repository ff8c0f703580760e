"""Rich text in, safe HTML out: every note body passes through ``clean_rich_text``."""

from __future__ import annotations

import html
import re

import nh3

ALLOWED_TAGS = {
    "p", "br", "div", "span", "b", "strong", "i", "em", "u", "s", "del", "strike",
    "ul", "ol", "li", "blockquote", "pre", "code", "h1", "h2", "h3", "h4", "a", "hr",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
URL_SCHEMES = {"http", "https", "mailto", "tel"}
_LOOKS_LIKE_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def clean_rich_text(raw: str) -> str:
    """Return ``raw`` as sanitized HTML; plain text keeps its line breaks as paragraphs."""
    text = (raw or "").strip()
    if not text:
        return ""
    if not _LOOKS_LIKE_HTML.search(text):
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        text = "".join(
            "<p>" + "<br>".join(html.escape(line) for line in p.strip().splitlines()) + "</p>"
            for p in paragraphs
        )
    return nh3.clean(
        text,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()


def rich_text_to_plain(value: str) -> str:
    """Return the text of sanitized HTML (for previews, exports and search)."""
    without_tags = nh3.clean(re.sub(r"<(br|/p|/li|/div)\s*/?>", "\n", value or ""), tags=set())
    return html.unescape(without_tags).strip()
