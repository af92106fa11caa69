"""Values that come from the data, made safe to show: bounded in size, escaped for markdown.

Whoever can land a file chooses its cell values, column names and category values, and those
reach Dagster's event log (check and asset metadata, failure messages) and every markdown the
product writes (metadata shown in the UI, the model card). Two rules, kept here in one place:

- Metadata carries bounded samples, never whole cells: at most ``SAMPLE_VALUES`` values, each at
  most ``VALUE_CHARS`` characters, so one 100 MB cell is never copied into the event log.
- Markdown never carries a data value as markup: ``md`` escapes every character that could make
  HTML, a link, an image or a code span of it, so ``</script><script>...``, ``<img onerror=...>`` or a
  ``[link](javascript:...)`` shows as the text it is; ``md_code`` sets a value as inline code
  whose fence it cannot close.

No imports beyond the standard library: assets, records and the explain renderer all use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SAMPLE_VALUES = 10
VALUE_CHARS = 200

# What can make markup of a value: raw HTML (<, as an entity: no tag can open without it; an
# entity of the value's own renders as the character it names, never as markup), links and images ([ ] !),
# code spans, table cells and escapes themselves (` | \\). Emphasis (* _) is left alone: it
# cannot fetch or run anything, and escaping it would change how every column name reads.
_MD_PUNCTUATION = frozenset("!`[]|\\")
_HTML = {"<": "&lt;"}


def bounded(value: object, chars: int = VALUE_CHARS) -> object:
    """``value`` with a string cut to ``chars`` characters (noting how many were left out);
    numbers, booleans and None unchanged, anything else as its bounded ``str``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) <= chars:
        return text
    return f"{text[:chars]}… (+{len(text) - chars:,} chars)"


def sample(values: Iterable[object], n: int = SAMPLE_VALUES, chars: int = VALUE_CHARS) -> list[object]:
    """The first ``n`` of ``values``, each ``bounded``."""
    out = []
    for value in values:
        if len(out) == n:
            break
        out.append(bounded(value, chars))
    return out


def shown(value: object, chars: int = VALUE_CHARS) -> str:
    """A value for a message: its bounded ``repr``."""
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}… (+{len(text) - chars:,} chars)"


def md(value: object) -> str:
    """``value`` as markdown text that cannot become markup: ``<`` as an entity;
    ``[``, ``]``, ``!``, backticks, ``|`` and backslashes backslash-escaped; line breaks as spaces
    (no new block can start)."""
    text = " ".join(str(value).splitlines())
    return "".join(_HTML.get(c) or ("\\" + c if c in _MD_PUNCTUATION else c) for c in text)


def md_code(value: object) -> str:
    """``value`` as an inline code span: fenced by more backticks than any run inside it, so the
    value cannot end the span; a code span's content is never read as markup or HTML."""
    text = " ".join(str(value).splitlines()).replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # stripped again by the renderer
    return f"{fence}{pad}{text}{pad}{fence}"


def md_code_block(text: str) -> str:
    """``text`` as a fenced code block that no line of it can close."""
    runs = [len(r) for r in re.findall(r"`{3,}", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}\n{text}\n{fence}"
