"""The champion's compare-and-set, history and rollback, on a real MLflow store (SQLite in tmp_path).

Versions are registered directly (no training): what is under test is how alias ``champion``
moves, not the models.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.registry import (
    CHAMPION,
    TAG_MOVE_PREFIX,
    TAG_PROMOTED,
    TAG_ROLLED_BACK_TO,
    MlflowRegistry,
    PromotionConflict,
    RegistryLockTimeout,
)

NAME = "gov_model"
PROMOTERS = 8
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialized, empty MLflow database: creating one runs every migration (seconds), copying it does not."""
    database = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowRegistry(tracking_uri=f"sqlite:///{database}", artifact_root="").client().search_registered_models()
    return database


def make_registry(
    tmp_path: Path, empty_store: Path, versions: int = PROMOTERS + 1, lock_uri: str = ""
) -> MlflowRegistry:
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    registry = MlflowRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"), lock_uri=lock_uri
    )
    client = registry.client()
    client.create_registered_model(NAME)
    (tmp_path / "model").mkdir(exist_ok=True)
    for _ in range(versions):
        client.create_model_version(NAME, source=str(tmp_path / "model"))
    return registry


@pytest.fixture
def registry(tmp_path: Path, empty_store: Path) -> MlflowRegistry:
    return make_registry(tmp_path, empty_store, versions=4)


def champion(registry: MlflowRegistry) -> str | None:
    found = registry.by_alias(NAME, CHAMPION)
    return found.version if found else None


def _promoter(uri: str, root: str, lock_uri: str, me: str, trials: int, start, done, results) -> None:  # noqa: ANN001
    """One of the racing processes: every trial, promote ``me`` against champion 1."""
    registry = MlflowRegistry(tracking_uri=uri, artifact_root=root, lock_uri=lock_uri)
    registry.by_alias(NAME, CHAMPION)  # imports and store set-up happen before the race, not in it
    for trial in range(trials):
        start.wait(timeout=120)
        try:
            move = registry.promote(
                name=NAME,
                version=me,
                expected_champion="1",
                record={"trial": trial},
                dagster_run_id=f"trial{trial}-v{me}",
            )
            results.put((trial, me, "won", move.to_version))
        except PromotionConflict as e:
            results.put((trial, me, "conflict", str(e)))
        done.wait(timeout=120)


def race(registry: MlflowRegistry, trials: int) -> None:
    """``PROMOTERS`` processes promote versions 2..9 against champion 1 at the same instant, ``trials`` times."""
    registry.promote(name=NAME, version="1", expected_champion=None, record={})
    # A fork server that has imported MLflow once forks the promoters in milliseconds; spawning
    # eight fresh interpreters would spend most of the test importing.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [
            __name__,
            "mlflow",
            "mlflow.store.model_registry.sqlalchemy_store",
            "mlflow.store.tracking.sqlalchemy_store",
        ]
    )
    start, done = context.Barrier(PROMOTERS + 1), context.Barrier(PROMOTERS + 1)
    results = context.Queue()
    mine = [str(v) for v in range(2, PROMOTERS + 2)]
    workers = [
        context.Process(
            target=_promoter,
            args=(registry.tracking_uri, registry.artifact_root, registry.lock_uri, me, trials, start, done, results),
        )
        for me in mine
    ]
    for w in workers:
        w.start()
    winners = []
    try:
        for trial in range(trials):
            start.wait(timeout=180)
            done.wait(timeout=120)
            outcomes = [results.get(timeout=30) for _ in workers]
            assert {o[0] for o in outcomes} == {trial}
            won = [o for o in outcomes if o[2] == "won"]
            assert len(won) == 1, f"trial {trial}: {len(won)} promoters won: {won}"
            winner = won[0][1]
            assert won[0][3] == winner
            for _, me, outcome, message in outcomes:
                if outcome == "conflict":
                    assert message.startswith(
                        f"{NAME}: champion is version {winner}, not 1 as when the promotion of version {me}"
                    )
                    assert (
                        f"moved there by promotion 1 -> {winner}" in message
                        and f"run trial{trial}-v{winner}" in message
                    )
            assert champion(registry) == winner
            winners.append(winner)
            registry.rollback(name=NAME, reason=f"reset after trial {trial}", to_version="1")
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    history = registry.champion_history(NAME)
    assert len(history) == 1 + 2 * trials
    assert [m.to_version for m in history if m.kind == "promotion"][1:] == winners
    assert [m.from_version for m in history[1:] if m.kind == "promotion"] == ["1"] * trials
    assert len(set(winners)) > 1, "the same process won every trial: the race did not happen"


def test_concurrent_promoters_exactly_one_wins_each_time(tmp_path: Path, empty_store: Path) -> None:
    race(make_registry(tmp_path, empty_store), trials=20)
    assert (tmp_path / "mlflow.db.locks" / f"champion-{NAME}.lock").exists()


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a Unix socket, for the advisory-lock strategy."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: initdb refuses root")
        shutil.chown(folder, "postgres")
        folder.chmod(0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True
    )
    port = 54000 + os.getpid() % 1000
    options = f"-k {folder} -p {port} -c listen_addresses=''"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_concurrent_promoters_with_a_postgres_advisory_lock(tmp_path: Path, empty_store: Path, postgres: str) -> None:
    registry = make_registry(tmp_path, empty_store, lock_uri=postgres)
    race(registry, trials=5)
    assert not (tmp_path / "mlflow.db.locks" / f"champion-{NAME}.lock").exists(), "the file lock was used instead"


@pytest.mark.parametrize("strategy", ["file", "postgres"])
def test_a_held_registry_lock_stops_every_champion_move(
    strategy: str, tmp_path: Path, empty_store: Path, request: pytest.FixtureRequest
) -> None:
    lock_uri = request.getfixturevalue("postgres") if strategy == "postgres" else ""
    holder = make_registry(tmp_path, empty_store, versions=2, lock_uri=lock_uri)
    holder.promote(name=NAME, version="1", expected_champion=None, record={})
    impatient = MlflowRegistry(
        tracking_uri=holder.tracking_uri, artifact_root=holder.artifact_root, lock_uri=lock_uri, lock_timeout_s=0.3
    )
    with holder.champion_lock(NAME):
        with pytest.raises(RegistryLockTimeout):
            impatient.promote(name=NAME, version="2", expected_champion="1", record={})
    assert champion(holder) == "1"
    impatient.promote(name=NAME, version="2", expected_champion="1", record={})
    assert champion(holder) == "2"


def test_a_stale_decision_fails_loudly_and_names_who_moved_the_champion(registry: MlflowRegistry) -> None:
    registry.promote(name=NAME, version="1", expected_champion=None, record={}, dagster_run_id="run-a")
    registry.promote(name=NAME, version="2", expected_champion="1", record={}, dagster_run_id="run-b", reason="better")
    with pytest.raises(PromotionConflict) as raised:
        registry.promote(name=NAME, version="3", expected_champion="1", record={}, dagster_run_id="run-c")
    message = str(raised.value)
    assert message.startswith(f"{NAME}: champion is version 2, not 1 as when the promotion of version 3 was decided")
    assert "moved there by promotion 1 -> 2" in message and "by run run-b: better" in message
    assert champion(registry) == "2"
    assert [m.to_version for m in registry.champion_history(NAME)] == ["1", "2"]

    registry.client().set_registered_model_alias(NAME, CHAMPION, "4")
    with pytest.raises(PromotionConflict, match="version 4 was made champion outside mlops"):
        registry.promote(name=NAME, version="3", expected_champion="2", record={})
    assert champion(registry) == "4"


def test_champion_moves_only_through_promote_and_rollback(registry: MlflowRegistry) -> None:
    with pytest.raises(ValueError, match="moves only through promote"):
        registry.set_alias(NAME, CHAMPION, "1")
    assert champion(registry) is None
    registry.set_alias(NAME, "challenger", "1")
    assert registry.by_alias(NAME, "challenger").version == "1"


def test_history_answers_who_was_champion_when(registry: MlflowRegistry) -> None:
    moments = []
    for version, expected in (("1", None), ("2", "1"), ("3", "2")):
        registry.promote(
            name=NAME,
            version=version,
            expected_champion=expected,
            record={"roc_auc": 0.8},
            dagster_run_id=f"run-{version}",
            reason=f"promote {version}",
        )
        time.sleep(0.01)
        moments.append(dt.datetime.now(dt.UTC))
    registry.rollback(name=NAME, reason="INC-7: winter coats in summer", dagster_run_id="run-rb")
    history = registry.champion_history(NAME)
    assert [(m.kind, m.from_version, m.to_version) for m in history] == [
        ("promotion", None, "1"),
        ("promotion", "1", "2"),
        ("promotion", "2", "3"),
        ("rollback", "3", "2"),
    ]
    assert history[1].dagster_run_id == "run-2" and history[1].reason == "promote 2"
    assert history[1].details == {"roc_auc": 0.8}
    assert history[3].reason == "INC-7: winter coats in summer"
    assert [registry.champion_at(NAME, t) for t in moments] == ["1", "2", "3"]
    assert registry.champion_at(NAME, history[0].at - dt.timedelta(seconds=1)) is None
    assert registry.champion_at(NAME, dt.datetime.now(dt.UTC)) == "2"
    naive = moments[1].replace(tzinfo=None)
    assert registry.champion_at(NAME, naive) == "2"
    assert registry.champion_at(NAME, moments[0].isoformat()) == "1"
    tags = registry.get(NAME, "2").tags
    assert '"kind": "promotion"' in tags[TAG_PROMOTED] and '"kind": "rollback"' in tags[TAG_ROLLED_BACK_TO]


def test_rollback_goes_to_the_previous_champion_or_a_former_one(registry: MlflowRegistry) -> None:
    with pytest.raises(ValueError, match="no version is champion"):
        registry.rollback(name=NAME, reason="nothing yet")
    registry.promote(name=NAME, version="1", expected_champion=None, record={})
    with pytest.raises(ValueError, match="no version before 1"):
        registry.rollback(name=NAME, reason="no previous")
    registry.promote(name=NAME, version="2", expected_champion="1", record={})
    registry.promote(name=NAME, version="3", expected_champion="2", record={})
    with pytest.raises(ValueError, match="needs a reason"):
        registry.rollback(name=NAME, reason="  ")
    with pytest.raises(ValueError, match="version 4 was never champion"):
        registry.rollback(name=NAME, reason="untested", to_version="4")
    with pytest.raises(LookupError, match="no registered version '9'"):
        registry.rollback(name=NAME, reason="typo", to_version="9")
    with pytest.raises(ValueError, match="version 3 is already champion"):
        registry.rollback(name=NAME, reason="noop", to_version="3")
    with pytest.raises(PromotionConflict, match="champion is version 3, not 2"):
        registry.rollback(name=NAME, reason="stale", expected_champion="2")
    assert champion(registry) == "3"
    assert registry.rollback(name=NAME, reason="back one").to_version == "2"
    assert registry.rollback(name=NAME, reason="to the first", to_version="1").to_version == "1"
    assert champion(registry) == "1"


def test_a_crash_between_record_and_alias_move_is_settled_by_the_next_move(registry: MlflowRegistry) -> None:
    registry.promote(name=NAME, version="1", expected_champion=None, record={})
    # The process dies when it is about to move the alias, after writing the pending record.
    script = textwrap.dedent(f"""
        from tests.governance.faults import Fault, FaultyRegistry, kill
        FaultyRegistry.FAULTS.append(
            Fault("set_registered_model_alias", kill, when=lambda name, alias, version: alias == "champion")
        )
        r = FaultyRegistry(tracking_uri={registry.tracking_uri!r}, artifact_root={registry.artifact_root!r})
        r.promote(name={NAME!r}, version="2", expected_champion="1", record={{}}, dagster_run_id="doomed")
        print("survived")
    """)
    crashed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    assert "survived" not in crashed.stdout
    assert champion(registry) == "1"
    raw = registry.client().get_registered_model(NAME).tags
    assert ['"state": "pending"' in v for k, v in raw.items() if k.startswith(TAG_MOVE_PREFIX)].count(True) == 1
    assert [m.to_version for m in registry.champion_history(NAME)] == ["1"]

    # The killed process held the file lock; the kernel released it, so this does not wait.
    registry.promote(name=NAME, version="2", expected_champion="1", record={}, dagster_run_id="rerun")
    assert champion(registry) == "2"
    history = registry.champion_history(NAME)
    assert [(m.to_version, m.dagster_run_id) for m in history] == [("1", None), ("2", "rerun")]
    raw = registry.client().get_registered_model(NAME).tags
    states = sorted(v.split('"state": "')[1].split('"')[0] for k, v in raw.items() if k.startswith(TAG_MOVE_PREFIX))
    assert states == ["aborted", "done", "done"]


def test_clients_naming_one_store_differently_take_the_same_advisory_lock(
    tmp_path: Path, empty_store: Path, postgres: str
) -> None:
    holder = make_registry(tmp_path, empty_store, versions=2, lock_uri=postgres)
    holder.promote(name=NAME, version="1", expected_champion=None, record={})
    (tmp_path / "alias").symlink_to(tmp_path)
    # The same database file through a symlink and a ./ : another URI text, the same registry.
    elsewhere = MlflowRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'alias' / '.' / 'mlflow.db'}",
        artifact_root=holder.artifact_root,
        lock_uri=postgres,
        lock_timeout_s=0.3,
    )
    assert elsewhere.tracking_uri != holder.tracking_uri and champion(elsewhere) == "1"
    with holder.champion_lock(NAME):
        with pytest.raises(RegistryLockTimeout):
            elsewhere.promote(name=NAME, version="2", expected_champion="1", record={})
    assert champion(holder) == "1"
    elsewhere.promote(name=NAME, version="2", expected_champion="1", record={})
    assert champion(holder) == "2"
