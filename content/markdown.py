"""Markdown files and markdown text, one way for the whole site.

- split_front_matter(): a file's YAML front matter and its body (question bank, lab catalog).
- render_markdown(): markdown -> sanitized HTML, with ONE allowlist. Curated content is
  sanitized too: a bank file, a lab file or an admin edit can carry hostile HTML, and it reaches
  every learner's browser.
"""

import re
from functools import lru_cache

import markdown
import nh3
import yaml
from django.utils.safestring import SafeString, mark_safe

# --- front matter ----------------------------------------------------------------------------

_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n(.*)\Z", re.DOTALL)


class FrontMatterError(ValueError):
    """The file does not start with a YAML mapping between two '---' lines; says why."""


def split_front_matter(text: str) -> tuple[dict, str]:
    """(fields, body) of a markdown file that starts with YAML front matter between '---' lines."""
    match = _FRONT_MATTER_RE.match(text.replace("\r\n", "\n"))
    if not match:
        raise FrontMatterError("the file must start with '---', YAML front matter, then '---'")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 2})" if where is not None else ""  # +1 for 1-based, +1 for the '---'
        raise FrontMatterError(f"invalid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(meta, dict):
        raise FrontMatterError("must be a YAML mapping of fields")
    return meta, match.group(2)


# --- rendering -------------------------------------------------------------------------------

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "u", "s", "del", "ins",
    "sub", "sup", "blockquote", "code", "pre", "kbd", "ul", "ol", "li", "dl", "dt", "dd",
    "table", "thead", "tbody", "tr", "th", "td", "a", "img", "span",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "th": {"align"},
    "td": {"align"},
    "ol": {"start"},
}
# No javascript:, data:, vbscript: or anything else that can run or smuggle content.
URL_SCHEMES = {"http", "https", "mailto"}
# Removed together with everything inside them (other disallowed tags only lose the tag itself).
CLEAN_CONTENT_TAGS = {"script", "style", "iframe", "object", "embed", "svg", "math", "template", "noscript", "textarea"}


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


_BULLET_RE = re.compile(r"^ {0,3}[-*+][ \t]+\S")
_ORDERED_RE = re.compile(r"^ {0,3}(\d{1,9})[.)][ \t]+\S")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _blank_line_before_lists(text: str) -> str:
    """Let a list interrupt a paragraph, as in GitHub's markdown (the bank is written that way);
    Python-Markdown otherwise needs a blank line before a list and renders "- item" as text.
    As in CommonMark, only an ordered list starting at 1 may interrupt a paragraph."""
    out: list[str] = []
    fence, in_list = "", False
    for line in text.split("\n"):
        opening = _FENCE_RE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
        elif opening:
            fence = opening.group(1)
        else:
            ordered = _ORDERED_RE.match(line)
            if _BULLET_RE.match(line) or ordered:
                if out and out[-1].strip() and not in_list and (not ordered or ordered.group(1) == "1"):
                    out.append("")
                in_list = True
            elif not line.strip():
                in_list = False
        out.append(line)
    return "\n".join(out)


@lru_cache(maxsize=1024)
def _render(text: str) -> str:
    text = _blank_line_before_lists(text)
    html = markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"], output_format="html")
    return sanitize_html(html)


def render_markdown(text: str) -> SafeString:
    """Render markdown and sanitize the result; safe to insert into a page as is."""
    return mark_safe(_render(text or ""))  # noqa: S308 - the output of nh3 is what makes it safe
