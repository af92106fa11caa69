"""Evaluation figures and the HTML evaluation report through ``dg.materialize``: a real lake on
disk and MLflow on SQLite, on GSS years whose group values are hostile HTML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_assets.contract import Asset, Meta
from mlops_assets.ml.figures import FigureName
from resources.registry import CHAMPION
from tests.assets.pipeline_harness import Harness
from tests.conftest import gss, gss_spec

NAME = "gss_slice"
# Group values as a user's data may hold them: markup, an entity, quotes.
HOSTILE = {"Female": '<script>alert("f")</script>', "Male": "M&amp;<b>'"}


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    root = tmp_path_factory.mktemp("report")
    source = root / "data" / "gss.parquet"
    source.parent.mkdir(parents=True)
    frame = gss()
    frame = frame[frame["year"].isin([1974, 1975, 1976])].copy()
    frame["gender"] = frame["gender"].map(HOSTILE)
    frame.to_parquet(source, index=False)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "spec.yaml").write_text(yaml.safe_dump(gss_spec(source)))
    h = Harness(root / "home", root / "pipelines", NAME)
    h.history("1976")
    return h


def test_the_evaluation_logs_every_figure_to_the_candidates_mlflow_run(decided: Harness) -> None:
    registry = decided.resources["registry"]
    champion = registry.by_alias(NAME, CHAMPION)
    assert champion is not None
    artifacts = registry.client().list_artifacts(champion.run_id, "mlops/figures")
    names = sorted(Path(a.path).name for a in artifacts)
    assert names == sorted(f"{f}.png" for f in FigureName), names
    for artifact in artifacts:
        assert artifact.file_size > 1000, artifact
    png = registry.run_artifact(champion.run_id, "mlops/figures/roc.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_promotion_links_a_self_contained_escaped_report_in_the_lake(decided: Harness) -> None:
    meta = decided.metadata(Asset.PROMOTION)
    path = Path(meta[Meta.EVALUATION_REPORT])
    lake_root = Path(decided.resources["lake"].root)
    assert path.is_file() and lake_root in path.parents, path
    assert path.relative_to(lake_root).parts[:3] == (NAME, "evaluation_report", f"v{meta['candidate_version']}")
    page = path.read_text()
    assert page.count('<img src="data:image/png;base64,') == len(FigureName)
    assert "http://" not in page and "https://" not in page
    # Every group value is in the page, escaped; none is markup.
    assert "&lt;script&gt;alert(&quot;f&quot;)&lt;/script&gt;" in page
    assert "M&amp;amp;&lt;b&gt;&#x27;" in page
    assert "<script" not in page and "<b>" not in page
    assert "promoted" in page
    # The same page is on the candidate's run beside the decision.
    registry = decided.resources["registry"]
    champion = registry.by_alias(NAME, CHAMPION)
    assert registry.run_artifact(champion.run_id, "mlops/evaluation_report.html").decode() == page
