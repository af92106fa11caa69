"""Alias ``champion``: its compare-and-set, its history, and rollback planning.

MLflow has no compare-and-set and no alias history, so both live here:

- every move is a registered-model tag ``mlops.champion_move.<time>-<id>`` holding from, to,
  when, why, which run and the decision's numbers, so the history is one read of the registered
  model;
- a move is written as pending, then the alias moves, then the record is marked done: a crash in
  between leaves a pending record that the next move settles, never an unrecorded alias move;
- a move retried by the same Dagster run after its alias move already landed (the tracking server
  went away before the record was finished) finds that move and finishes it, instead of reporting
  a conflict with itself.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from mlops_assets import contract
from resources.registry import versions
from resources.registry.errors import PromotionConflict

if TYPE_CHECKING:
    from mlflow import MlflowClient

MoveKind = Literal["promotion", "rollback"]
# A move recorded but not yet applied is "pending"; a crash can leave one behind, and the next
# move under the lock settles it as "done" (the alias did move) or "aborted" (it did not).
MoveState = Literal["pending", "done", "aborted"]
# Without a lock, another process's pending record may be in flight; leave young ones alone.
PENDING_GRACE_S = 300.0
# Takes the registry's identity of the model; yields whether no lock was available.
ChampionLock = Callable[[str], contextlib.AbstractContextManager[bool]]


@dataclass(frozen=True)
class ChampionMove:
    """One move of alias ``champion``: a promotion or a rollback."""

    at: _dt.datetime
    from_version: str | None
    to_version: str
    kind: MoveKind
    reason: str
    dagster_run_id: str | None
    actor: str
    override: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    state: MoveState = "done"
    key: str = ""

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["at"] = self.at.isoformat()
        del record["key"]
        return record

    @classmethod
    def from_record(cls, key: str, record: dict[str, Any]) -> ChampionMove:
        return cls(**{**record, "at": _dt.datetime.fromisoformat(record["at"]), "key": key})

    def describe(self) -> str:
        by = f"run {self.dagster_run_id}" if self.dagster_run_id else self.actor
        return (
            f"{self.kind} {self.from_version or '(none)'} -> {self.to_version} at "
            f"{self.at.isoformat(timespec='seconds')} by {by}" + (" (OVERRIDE)" if self.override else "")
        )


@dataclass(frozen=True)
class ChampionState:
    """The champion now and every recorded move (oldest first), from one read of the registered model."""

    champion: str | None
    moves: list[ChampionMove]


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def as_utc(when: _dt.datetime | str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(when) if isinstance(when, str) else when
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        # No passwd entry for this uid (common in containers).
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def registry_identity(client: MlflowClient, name: str) -> str:
    """What identifies registered model ``name`` in this registry, the same for every client
    whatever address it reached the registry by: its name and its creation time as stored."""
    return f"{name}@{client.get_registered_model(name).creation_timestamp}"


def read_state(client: MlflowClient, name: str) -> ChampionState:
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return ChampionState(None, [])
        raise
    champion = (registered.aliases or {}).get(contract.CHAMPION)
    prefix = contract.CHAMPION_MOVE_TAG_PREFIX
    moves = [ChampionMove.from_record(k, json.loads(v)) for k, v in registered.tags.items() if k.startswith(prefix)]
    return ChampionState(None if champion is None else str(champion), sorted(moves, key=lambda m: (m.at, m.key)))


def history(state: ChampionState) -> list[ChampionMove]:
    """Every move that happened, oldest first (aborted ones left out)."""
    if not state.moves:
        return []
    settled = [*state.moves[:-1], _settle(state.moves[-1], state.champion)]
    return [m for m in settled if m.state == "done"]


def own_move(
    state: ChampionState,
    *,
    kind: MoveKind,
    dagster_run_id: str | None,
    to_version: str | None,
    from_version: str | None = None,
    check_from: bool = False,
) -> ChampionMove | None:
    """The move this Dagster run already made, if its alias move landed and nothing moved since.

    A retry of the same run with the same target then finishes that move instead of conflicting
    with it. Without a run id there is no way to tell a retry from a second request: None.
    """
    if dagster_run_id is None:
        return None
    live = [m for m in state.moves if m.state != "aborted"]
    if not live:
        return None
    last = live[-1]
    if (
        last.dagster_run_id == dagster_run_id
        and last.kind == kind
        and (to_version is None or last.to_version == to_version)
        and (not check_from or last.from_version == from_version)
        and state.champion == last.to_version
    ):
        return last
    return None


def move_champion(
    client: MlflowClient,
    *,
    lock: ChampionLock,
    name: str,
    to_version: str,
    expected: str | None,
    kind: MoveKind,
    reason: str,
    dagster_run_id: str | None,
    override: bool,
    details: dict[str, Any],
) -> ChampionMove:
    """The one compare-and-set behind every champion move.

    Raises:
        PromotionConflict: the champion is not ``expected`` (the message says which version it
            is and who moved it there), or a concurrent move won the race.
    """
    target = versions.get(client, name, to_version)
    with lock(registry_identity(client, name)) as verify_only:
        state = read_state(client, name)
        mine = own_move(
            state,
            kind=kind,
            dagster_run_id=dagster_run_id,
            to_version=target.version,
            from_version=expected,
            check_from=True,
        )
        if mine is not None:
            return _finish(client, name, mine)
        _settle_pending(client, name, state, locked=not verify_only)
        if state.champion != expected:
            raise PromotionConflict(
                f"{name}: champion is version {state.champion or '(none)'}, not {expected or '(none)'} as when "
                f"the {kind} of version {to_version} was decided; {_who_moved(state.moves, state.champion)}. "
                "Nothing was changed; re-run the evaluation (or the rollback) against the new champion"
            )
        at = now()
        move = ChampionMove(
            at=at,
            from_version=state.champion,
            to_version=target.version,
            kind=kind,
            reason=reason[:2000],
            dagster_run_id=dagster_run_id,
            actor=actor(),
            override=override,
            details=_compact(details),
            state="pending",
            key=f"{contract.CHAMPION_MOVE_TAG_PREFIX}{at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}",
        )
        _write(client, name, move)
        client.set_registered_model_alias(name, contract.CHAMPION, target.version)
        after = read_state(client, name)
        if after.champion != target.version:
            # Only possible without a lock: a concurrent writer moved it after us.
            _write(client, name, replace(move, state="aborted"))
            raise PromotionConflict(
                f"{name}: lost a concurrent champion move: set version {target.version}, then read "
                f"version {after.champion or '(none)'}; {_who_moved(after.moves, after.champion)}"
            )
        return _finish(client, name, move)


def rollback_target(
    state: ChampionState, name: str, *, to_version: str | None, get: Callable[[str], versions.RegisteredModel]
) -> versions.RegisteredModel:
    """The version a rollback goes to: ``to_version`` if it was champion before, else the version
    that was champion before the current one.

    Raises:
        ValueError: no champion, no previous champion, a target that was never champion, or one
            that is champion already.
        LookupError: ``to_version`` is not registered.
    """
    current = state.champion
    if current is None:
        raise ValueError(f"{name}: no version is champion, so there is nothing to roll back")
    moves = history(state)
    if to_version:
        target = get(to_version)
        was_champion = any(m.to_version == target.version for m in moves) or contract.MlflowTag.PROMOTED in target.tags
        if not was_champion:
            raise ValueError(
                f"{name}: version {target.version} was never champion, so it cannot be rolled back "
                "to; promote it through the promotion asset (with an override if its gates fail)"
            )
    else:
        previous = next((m.from_version for m in reversed(moves) if m.to_version == current), None)
        if previous is None:
            raise ValueError(f"{name}: the champion history has no version before {current}; name one with --to")
        target = get(previous)
    if target.version == current:
        raise ValueError(f"{name}: version {target.version} is already champion")
    return target


def _finish(client: MlflowClient, name: str, move: ChampionMove) -> ChampionMove:
    """Marks a move whose alias move landed as done, on the history, the new champion and the
    registered model; every write is idempotent, so a retry may repeat any of them."""
    done = replace(move, state="done")
    if move.state != "done":
        _write(client, name, done)
    record = json.dumps(done.to_record(), default=str)
    tag = contract.MlflowTag.PROMOTED if move.kind == "promotion" else contract.MlflowTag.ROLLED_BACK_TO
    client.set_model_version_tag(name, move.to_version, tag, record)
    client.set_registered_model_tag(name, contract.MlflowTag.LAST_CHAMPION_MOVE, record)
    return done


def _write(client: MlflowClient, name: str, move: ChampionMove) -> None:
    client.set_registered_model_tag(name, move.key, json.dumps(move.to_record(), default=str))


def _settle_pending(client: MlflowClient, name: str, state: ChampionState, *, locked: bool) -> None:
    for move in state.moves:
        if move.state != "pending":
            continue
        if not locked and (now() - move.at).total_seconds() < PENDING_GRACE_S:
            continue
        # Only the latest move can have happened: any later one was recorded after it settled.
        happened = move is state.moves[-1] and state.champion == move.to_version
        _write(client, name, replace(move, state="done" if happened else "aborted"))


def _settle(move: ChampionMove, champion: str | None) -> ChampionMove:
    """A pending record is the latest move; it happened iff the alias points where it says."""
    if move.state != "pending":
        return move
    return replace(move, state="done" if champion == move.to_version else "aborted")


def _who_moved(moves: list[ChampionMove], version: str | None) -> str:
    if version is None:
        return "no version is champion"
    last = next((m for m in reversed(moves) if m.to_version == version and m.state != "aborted"), None)
    if last is None:
        return f"version {version} was made champion outside mlops (no history record: the MLflow UI or API?)"
    return f"moved there by {last.describe()}" + (f": {last.reason}" if last.reason else "")


def _compact(details: dict[str, Any], limit: int = 6000) -> dict[str, Any]:
    """Keeps a history record well under MLflow's tag size; the full record is the asset's."""
    text = json.dumps(details, default=str)
    if len(text) <= limit:
        return json.loads(text)
    kept = {k: v for k, v in details.items() if len(json.dumps(v, default=str)) < limit // 4}
    kept["truncated"] = sorted(set(details) - set(kept))
    return json.loads(json.dumps(kept, default=str))
