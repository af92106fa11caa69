"""A promotion or rollback retried after its alias move already landed finds its own move and
records success, instead of reporting a conflict with itself (or rolling back a second time).

The fault is a tracking-server outage injected into the real MlflowClient right after the alias
moved: on the write that marks the move done, on the new champion's tag, or on the registered
model's latest-move tag. The retry is the same call by the same Dagster run, as a step retry makes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from resources.registry import (
    TAG_LAST_CHAMPION_MOVE,
    TAG_MOVE_PREFIX,
    TAG_PROMOTED,
    TAG_ROLLED_BACK_TO,
    MlflowRegistry,
    PromotionConflict,
    is_tracking_outage,
)
from tests.governance.conftest import NAME as PIPELINE
from tests.governance.conftest import UNTIL_2010, Governed
from tests.governance.faults import Fault, FaultyRegistry, faulty_copy, move_record_in_state, outage
from tests.governance.test_registry import NAME, champion, empty_store, make_registry

__all__ = ["empty_store"]  # the fixture, shared with test_registry


def _tag_key(key: str) -> Callable[..., bool]:
    return lambda *args, **kwargs: args[-2] == key


# The writes after the alias move, in order; an outage before any of them leaves the move landed.
AFTER_THE_ALIAS_MOVE: dict[str, tuple[str, Callable[[str], Callable[..., bool]]]] = {
    "marking the move done": ("set_registered_model_tag", lambda tag: move_record_in_state("done")),
    "tagging the new champion": ("set_model_version_tag", lambda tag: _tag_key(tag)),
    "tagging the latest move": ("set_registered_model_tag", lambda tag: _tag_key(TAG_LAST_CHAMPION_MOVE)),
}


@pytest.fixture
def faults() -> Iterator[list[Fault]]:
    FaultyRegistry.FAULTS.clear()
    yield FaultyRegistry.FAULTS
    FaultyRegistry.FAULTS.clear()


def move_records(registry: MlflowRegistry) -> list[dict]:
    tags = registry.client().get_registered_model(NAME).tags
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(TAG_MOVE_PREFIX)]


def assert_one_finished_move(registry: MlflowRegistry, *, run: str, kind: str, to: str, tag: str) -> None:
    mine = [r for r in move_records(registry) if r["dagster_run_id"] == run]
    assert [(r["kind"], r["to_version"], r["state"]) for r in mine] == [(kind, to, "done")]
    assert json.loads(registry.get(NAME, to).tags[tag])["dagster_run_id"] == run
    latest = json.loads(registry.client().get_registered_model(NAME).tags[TAG_LAST_CHAMPION_MOVE])
    assert (latest["dagster_run_id"], latest["to_version"], latest["state"]) == (run, to, "done")


@pytest.mark.parametrize("where", list(AFTER_THE_ALIAS_MOVE))
def test_a_promotion_retried_after_its_alias_move_landed_records_success(
    where: str, tmp_path: Path, empty_store: Path, faults: list[Fault]
) -> None:
    registry = make_registry(tmp_path, empty_store, versions=3)
    registry.promote(name=NAME, version="1", expected_champion=None, record={})
    faulty = faulty_copy(registry)
    method, when = AFTER_THE_ALIAS_MOVE[where]
    faults.append(Fault(method, outage, when=when(TAG_PROMOTED), times=1))

    def promote() -> object:
        return faulty.promote(
            name=NAME, version="2", expected_champion="1", record={"roc_auc": 0.9}, dagster_run_id="run-p"
        )

    with pytest.raises(MlflowException) as first:
        promote()
    assert is_tracking_outage(first.value), "the step's retry wrapper must see an outage"
    assert faults[0].hits == 1
    assert champion(registry) == "2", "the alias move landed before the outage"

    move = promote()
    assert (move.kind, move.from_version, move.to_version, move.state) == ("promotion", "1", "2", "done")
    assert move.details == {"roc_auc": 0.9}
    assert champion(registry) == "2"
    assert_one_finished_move(registry, run="run-p", kind="promotion", to="2", tag=TAG_PROMOTED)
    assert [(m.kind, m.to_version) for m in registry.champion_history(NAME)] == [("promotion", "1"), ("promotion", "2")]


@pytest.mark.parametrize("where", list(AFTER_THE_ALIAS_MOVE))
def test_a_rollback_retried_after_its_alias_move_landed_does_not_roll_back_again(
    where: str, tmp_path: Path, empty_store: Path, faults: list[Fault]
) -> None:
    registry = make_registry(tmp_path, empty_store, versions=3)
    for version, expected in (("1", None), ("2", "1"), ("3", "2")):
        registry.promote(name=NAME, version=version, expected_champion=expected, record={})
    faulty = faulty_copy(registry)
    method, when = AFTER_THE_ALIAS_MOVE[where]
    faults.append(Fault(method, outage, when=when(TAG_ROLLED_BACK_TO), times=1))

    def rollback() -> object:
        # As the rollback asset calls it: against the champion it sees when the attempt starts.
        return faulty.rollback(name=NAME, reason="INC-9", expected_champion=champion(registry), dagster_run_id="run-rb")

    with pytest.raises(MlflowException):
        rollback()
    assert champion(registry) == "2"

    move = rollback()
    assert (move.kind, move.from_version, move.to_version, move.state) == ("rollback", "3", "2", "done")
    assert champion(registry) == "2", "the retry rolled back a second time"
    assert_one_finished_move(registry, run="run-rb", kind="rollback", to="2", tag=TAG_ROLLED_BACK_TO)


@pytest.mark.parametrize(
    ("retried_by", "version", "expected"),
    [
        ("another-run", "2", "1"),  # a different run's stale decision
        (None, "2", "1"),  # no run id: nothing tells a retry from a second request
        ("run-p", "3", "1"),  # the same run, another target
        ("run-p", "2", "3"),  # the same run and target, decided against another champion
    ],
)
def test_only_the_same_run_with_the_same_move_counts_as_its_own(
    retried_by: str | None, version: str, expected: str, tmp_path: Path, empty_store: Path, faults: list[Fault]
) -> None:
    registry = make_registry(tmp_path, empty_store, versions=3)
    registry.promote(name=NAME, version="1", expected_champion=None, record={})
    faults.append(Fault("set_registered_model_tag", outage, when=move_record_in_state("done"), times=1))
    with pytest.raises(MlflowException):
        faulty_copy(registry).promote(name=NAME, version="2", expected_champion="1", record={}, dagster_run_id="run-p")

    with pytest.raises(PromotionConflict, match=f"champion is version 2, not {expected}"):
        registry.promote(name=NAME, version=version, expected_champion=expected, record={}, dagster_run_id=retried_by)
    assert champion(registry) == "2"


def test_the_promotion_step_retried_after_an_outage_records_promoted(
    governed: Governed, candidate: str, faults: list[Fault]
) -> None:
    champion_before = governed.champion()
    lenient = governed.variant(
        gates={
            "min_metrics": {"roc_auc": 0.5},
            "max_regression": {"roc_auc": 1.0},
            "max_demographic_parity_difference": 1.0,
            "max_equalized_odds_difference": 1.0,
        }
    )
    lenient.resources["registry"] = faulty_copy(governed.registry, outage_retries=2, outage_wait_s=0.01)
    faults.append(Fault("set_registered_model_tag", outage, when=move_record_in_state("done"), times=1))
    try:
        result = lenient.materialize(["training_dataset", "model", "evaluation", "promotion"], run_config=UNTIL_2010)
        assert result.success, lenient.failure_message(result)
        assert faults[0].hits == 1
        assert lenient.retries(result) == [0.01], "the promotion step was retried once, after the outage"
        meta = lenient.metadata("promotion")
        assert (meta["decision"], meta["champion_before"], meta["champion_after"]) == (
            "promoted",
            champion_before,
            candidate,
        )
        assert governed.champion() == candidate
        record = governed.lake.read_json(PIPELINE, "promotion", f"v{candidate}")
        assert record["outcome"] == "promoted" and record["dagster_run_id"] == result.run_id
        moves = [m for m in governed.registry.champion_history(PIPELINE) if m.dagster_run_id == result.run_id]
        assert [(m.from_version, m.to_version, m.state) for m in moves] == [(champion_before, candidate, "done")]
    finally:
        if governed.champion() != champion_before:
            governed.registry.rollback(name=PIPELINE, reason="test reset", to_version=champion_before)


def test_the_rollback_step_retried_after_an_outage_rolls_back_once(
    governed: Governed, candidate: str, faults: list[Fault]
) -> None:
    champion_before = governed.champion()
    registry = governed.registry
    registry.promote(
        name=PIPELINE, version=candidate, expected_champion=champion_before, record={}, dagster_run_id="setup"
    )
    h = governed.variant()
    h.resources["registry"] = faulty_copy(registry, outage_retries=2, outage_wait_s=0.01)
    faults.append(Fault("set_registered_model_tag", outage, when=move_record_in_state("done"), times=1))
    try:
        config = {"ops": {f"{PIPELINE}__champion_rollback": {"config": {"reason": "INC-77"}}}}
        result = h.materialize(["champion_rollback"], run_config=config)
        assert result.success, h.failure_message(result)
        assert faults[0].hits == 1 and h.retries(result) == [0.01]
        meta = h.metadata("champion_rollback")
        assert (meta["from_version"], meta["to_version"]) == (candidate, champion_before)
        assert governed.champion() == champion_before
        rollbacks = [m for m in registry.champion_history(PIPELINE) if m.dagster_run_id == result.run_id]
        assert [(m.kind, m.from_version, m.to_version) for m in rollbacks] == [("rollback", candidate, champion_before)]
    finally:
        if governed.champion() != champion_before:
            registry.rollback(name=PIPELINE, reason="test reset", to_version=champion_before)
