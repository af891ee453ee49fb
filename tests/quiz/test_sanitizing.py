"""Markdown is rendered on the server and sanitized; learners' answers are always escaped."""

import re
from html.parser import HTMLParser

import pytest

from content.markdown import render_markdown
from quiz.services import answer_save, attempt_grade, attempt_start

HOSTILE = {
    "script tag": "Hello <script>alert('xss')</script> world",
    "script in markdown": "*hi*\n\n<script src=https://evil.example/x.js></script>",
    "javascript link": "[click me](javascript:alert(1))",
    "javascript link, mixed case": '<a href="JaVaScRiPt:alert(1)">x</a>',
    "javascript link, entity encoded": '<a href="&#106;avascript:alert(1)">x</a>',
    "onerror attribute": '<img src="x" onerror="alert(1)">',
    "markdown image onerror": '![a](x" onerror="alert(1))',
    "raw html with handlers": '<div onclick="alert(1)" onmouseover="alert(2)">hover</div>',
    "data url link": "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "data url image": '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "svg onload": '<svg onload="alert(1)"><circle r="10"/></svg>',
    "svg script": "<svg><script>alert(1)</script></svg>",
    "style tag": "<style>body { display: none }</style>text",
    "style attribute": '<p style="background:url(javascript:alert(1))">styled</p>',
    "iframe": '<iframe src="https://evil.example"></iframe>',
    "object embed": '<object data="x.swf"></object><embed src="x.swf">',
    "form": '<form action="https://evil.example"><input name=q><button>go</button></form>',
    "meta refresh": '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    "vbscript": '<a href="vbscript:msgbox(1)">x</a>',
    "html comment trick": "<!--<img src=x onerror=alert(1)>-->",
    "unclosed tag": '<img src=x onerror=alert(1)//',
    "link in fenced code": "```html\n<script>alert(1)</script>\n```",
}

SAFE_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "u", "s", "del", "ins", "sub",
             "sup", "blockquote", "code", "pre", "kbd", "ul", "ol", "li", "dl", "dt", "dd", "table", "thead", "tbody",
             "tr", "th", "td", "a", "img", "span"}


class _Inspector(HTMLParser):
    """Collects what a browser would actually act on: elements, attributes and URLs (not escaped text)."""

    def __init__(self):
        super().__init__()
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in SAFE_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"{tag}[{name}]")
            if name in ("href", "src") and value and re.match(r"^\s*[a-z][a-z0-9+.-]*:", value, re.IGNORECASE) \
                    and not re.match(r"^(https?|mailto):", value, re.IGNORECASE):
                self.problems.append(f"{tag}[{name}={value}]")

    def handle_comment(self, data):
        self.problems.append("<!-- comment -->")


def problems(html: str) -> list[str]:
    inspector = _Inspector()
    inspector.feed(html)
    inspector.close()
    return inspector.problems


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_markdown_renders_inert(text):
    html = str(render_markdown(text))
    assert problems(html) == [], html
    assert "<script" not in html.lower() and "alert('xss')" not in html


def test_the_inspector_itself_catches_live_markup():
    assert problems('<img src="x" onerror="alert(1)"><a href="javascript:x">a</a><script></script>') == [
        "img[onerror]", "a[href=javascript:x]", "<script>"]


def test_code_is_shown_as_text_not_run():
    html = str(render_markdown(HOSTILE["link in fenced code"]))
    assert "<pre><code>" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_safe_markdown_keeps_code_tables_and_links_with_noopener():
    html = str(render_markdown(
        "**bold** and `code`\n\n```python\nx = 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[docs](https://example.com)"))
    for tag in ("<strong>bold</strong>", "<code>code</code>", "<pre><code>x = 1", "<table>", "<td>1</td>"):
        assert tag in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">docs</a>' in html


def test_a_hostile_question_page_is_inert(client, make_question):
    question = make_question("open", prompt=HOSTILE["onerror attribute"] + "\n\n" + HOSTILE["script tag"],
                             hint=HOSTILE["svg onload"], answer=HOSTILE["javascript link"])
    page = client.get(f"/quiz/q/{question.slug}/?reveal=answer").content.decode()
    assert "alert('xss')" not in page and "onerror" not in page and "javascript:alert" not in page
    assert "<svg onload" not in page


def test_a_learner_answer_is_stored_as_typed_and_escaped_on_the_results_page(owner_client, owner, make_question, settings):
    settings.LLM_API_KEY = ""
    question = make_question("open")
    attempt = attempt_start(user=owner, questions=[question], title="Escaping")
    typed = "<script>alert('owned')</script> <b>bold?</b> & done"
    answer_save(answer=attempt.answers.get(), text=typed)
    assert attempt.answers.get().text == typed
    attempt_grade(attempt=attempt)
    page = owner_client.get(f"/quiz/attempts/{attempt.pk}/results/").content.decode()
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt; &lt;b&gt;bold?&lt;/b&gt; &amp; done" in page
    assert "<script>alert('owned')" not in page
    editor = owner_client.get(f"/quiz/attempts/{attempt.pk}/1/")  # submitted: redirects, never re-renders raw
    assert editor.status_code == 302


def test_a_list_right_after_a_paragraph_renders_as_a_list_as_on_github():
    html = str(render_markdown("**Key points:**\n- one\n- two\n\nIn\n2024. Not a list\n\n```\n- code, not a list\n```"))
    assert "<p><strong>Key points:</strong></p>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert "<p>In\n2024. Not a list</p>" in html
    assert "<pre><code>- code, not a list" in html
