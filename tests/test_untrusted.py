"""No value from the data runs script in any markdown the product writes, and metadata carries
bounded samples of values, never whole cells. Rendered with a real CommonMark renderer that
passes raw HTML through (the most permissive a viewer can be)."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from mlops_assets.assets.common import frame_schema, table
from mlops_assets.explain import render_model_card
from mlops_assets.records import BatchValidation, Lineage
from mlops_assets.untrusted import VALUE_CHARS, bounded, md, md_code, md_code_block, sample

HOSTILE = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](http://evil.example/steal?c=1)",
    "![x](http://evil.example/x.png)",
    "x` <b>bold</b> `y",
    "a | b ||",
]
FIXTURES = Path(__file__).parent / "fixtures" / "records"
RENDER = MarkdownIt("commonmark", {"html": True}).enable("table")
TAGS = re.compile(r"<(script|img|a|b|iframe)\b", re.IGNORECASE)


def rendered(markdown: str) -> str:
    return RENDER.render(markdown)


def test_the_renderer_would_run_them_raw() -> None:
    # the test's own premise: unescaped, each becomes markup: the first four as text, the
    # backtick one once wrapped in a naive code span (its backticks close the span early)
    for value in HOSTILE[:4]:
        assert TAGS.search(rendered(value)), value
    assert TAGS.search(rendered(f"`{HOSTILE[4]}`"))
    assert not TAGS.search(rendered(HOSTILE[4])), "as text it is a code span: the premise is the wrapping"


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("escape", [md, md_code, md_code_block])
def test_an_escaped_value_renders_as_its_text(value: str, escape) -> None:  # noqa: ANN001
    out = rendered(escape(value))
    assert not TAGS.search(out)
    assert "href=" not in out and "src=" not in out.replace("src=x", "")
    text = html.unescape(re.sub(r"<[^>]+>", "", out)).replace("\\|", "|").strip()
    assert value in text


def test_table_cells_are_escaped_and_bounded() -> None:
    rows = [{"group": value, "rows": 3} for value in HOSTILE] + [{"group": "x" * 100_000, "rows": 1}]
    meta = table(rows, ["group", "rows"])
    cells = [r.data["group"] for r in meta.records]
    for cell in cells:
        assert not TAGS.search(rendered(cell))
    assert len(cells[-1]) < VALUE_CHARS + 40 and "+99,800 chars" in cells[-1]
    assert [r.data["rows"] for r in meta.records] == [3] * len(HOSTILE) + [1]


def test_the_model_card_escapes_what_came_from_the_data() -> None:
    doc = Lineage.from_dict(json.loads((FIXTURES / "explanation_2010.json").read_text()), origin="fixture")
    data = doc.training_data
    hostile_batch = dataclasses.replace(
        data.batches[0],
        validation=BatchValidation(False, f"column 'occ' unexpected, e.g. {HOSTILE}", None, None, 0, 1),
    )
    decision = doc.decision.decision
    gates = [
        dataclasses.replace(g, detail=f"{g.detail}; groups too small: gender={HOSTILE[1]} (3)") for g in decision.gates
    ]
    doc = dataclasses.replace(
        doc,
        training_data=dataclasses.replace(data, batches=(hostile_batch, *data.batches[1:])),
        decision=dataclasses.replace(
            doc.decision, decision=dataclasses.replace(decision, gates=gates, reasons=[*decision.reasons, HOSTILE[0]])
        ),
        notes=(*doc.notes, HOSTILE[2]),
    )
    card = render_model_card(doc)
    assert HOSTILE[0] not in card  # the raw text is nowhere in the file either
    out = rendered(card)
    assert not TAGS.search(out)
    assert "href=" not in out
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in out  # shown, as text


def test_metadata_samples_are_bounded() -> None:
    assert sample(range(1000)) == list(range(10))
    assert bounded("y" * 10**6).endswith("(+999,800 chars)")
    assert bounded(3.5) == 3.5 and bounded(None) is None

    import pandas as pd

    wide = pd.DataFrame({("c" * 10_000) + str(i): [1] for i in range(500)})
    schema = frame_schema(wide)
    assert len(schema.columns) == 200
    assert max(len(c.name) for c in schema.columns) < VALUE_CHARS + 40


def test_a_huge_unexpected_cell_reaches_check_metadata_only_as_a_bounded_sample() -> None:
    import pandas as pd

    from mlops_assets.assets.validation import check_results
    from mlops_assets.ml.data import ResolvedColumns
    from mlops_assets.ml.validation import infer_suite, validate
    from mlops_assets.spec import parse_spec

    spec = parse_spec(
        {"name": "m", "source": {"uri": "x.parquet"}, "label": {"column": "y", "threshold": 1}}, origin="test"
    )
    reference = pd.DataFrame({"occ": ["a", "b"] * 50, "age": range(100), "y": [0, 1] * 50})
    suite = infer_suite(spec, ResolvedColumns(["age"], ["occ"]), reference)
    huge = "z" * 5_000_000
    batch = pd.DataFrame({"occ": [huge + str(i) for i in range(40)] + ["a"] * 60, "age": range(100), "y": [0] * 100})
    results = list(check_results(validate(batch, suite, batch="2030"), batch="2030", rows=100))
    failed = [r for r in results if not r.passed]
    assert failed, "the unseen categories must fail a check"
    for result in results:
        size = len(result.description or "") + sum(
            len(json.dumps(v.value, default=str)) for v in result.metadata.values()
        )
        assert size < 10_000, (result.check_name, size)
