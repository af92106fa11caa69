"""The ``mlops`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mlops_assets.contract import SERVE_PORT, Asset, Job, Meta, op_name, partitions_name
from mlops_assets.spec import load_specs
from resources.settings import Settings, build_resources

if TYPE_CHECKING:
    import dagster as dg

# MLflow draws a progress bar per artifact download from a tracking server, three of them before
# the first line of `mlops explain`: noise in a terminal answer and in logs. MLflow 3.17.2 has no
# switch for them but this variable, which it reads from os.environ at every download
# (ArtifactProgressBar.set_pbar in mlflow/utils/file_utils.py; docs/pinned-libraries.md).
ARTIFACT_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description="Operate the models defined by the pipeline specs.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the whole lifecycle of a model through the Dagster CLI")
    demo_parser.add_argument("--model", help="spec name (default: the first spec)")
    commands.add_parser("init", help="create DAGSTER_HOME with the instance settings the product expects")
    explain_parser = commands.add_parser(
        "explain", help="which model version made a batch's predictions, what data trained it, how it passed testing"
    )
    explain_parser.add_argument("model", help="spec name")
    subject = explain_parser.add_mutually_exclusive_group(required=True)
    subject.add_argument("--batch", help="explain this batch's predictions")
    subject.add_argument("--version", help="explain this registered version")
    explain_parser.add_argument(
        "--row", type=int, help="with --batch: why this row got its score (its stored attributions)"
    )
    explain_parser.add_argument("--json", action="store_true", help="print the lineage as JSON")
    rollback_parser = commands.add_parser("rollback", help="move the champion back to an earlier champion")
    rollback_parser.add_argument("model", help="spec name")
    rollback_parser.add_argument("--to", default="", help="version to roll back to (default: the previous champion)")
    rollback_parser.add_argument("--reason", required=True, help="why (recorded in the champion history)")
    rollback_parser.add_argument(
        "--registry-only",
        action="store_true",
        help="move the alias through the registry alone, without a Dagster run (when Dagster is down)",
    )
    label_parser = commands.add_parser(
        "label", help="join labels that arrived later to served requests (by request_id) and score them again"
    )
    label_parser.add_argument("model", help="spec name")
    label_parser.add_argument(
        "--file", required=True, help="CSV or Parquet with columns request_id and the spec's label column"
    )
    history_parser = commands.add_parser("history", help="every champion move; or who was champion at a time")
    history_parser.add_argument("model", help="spec name")
    history_parser.add_argument("--at", help="an ISO time (UTC unless it has an offset): print that moment's champion")
    report_parser = commands.add_parser("report", help="render a report on demand")
    reports = report_parser.add_subparsers(dest="report", required=True)
    drift_parser = reports.add_parser("drift", help="render a drift-checked batch's Evidently HTML drift report")
    drift_parser.add_argument("model", help="spec name")
    drift_parser.add_argument("--batch", required=True, help="the batch (partition) to report on")
    spec_parser = commands.add_parser("spec", help="write a starter spec from a data file")
    spec_commands = spec_parser.add_subparsers(dest="spec_command", required=True)
    spec_init_parser = spec_commands.add_parser("init", help="a commented starter spec inferred from the data")
    spec_init_parser.add_argument("name", help="model name (lower_snake_case)")
    spec_init_parser.add_argument("--source", required=True, help="a Parquet/CSV file, folder or glob, or a URI")
    spec_init_parser.add_argument("--label", help="the column to predict (without it the spec needs one edit)")
    spec_init_parser.add_argument("--output", help="where to write the spec (default: <name>.yaml here)")
    backfill_parser = commands.add_parser(
        "backfill", help="materialize per-batch assets of many batches in one Dagster run, a step per batch"
    )
    backfill_parser.add_argument("model", help="spec name")
    backfill_parser.add_argument(
        "--batch", action="append", dest="batches", help="a batch (repeat it; default: every registered batch)"
    )
    backfill_parser.add_argument(
        "--assets",
        default="raw_batch,validated_batch,features",
        help="comma-separated per-batch assets (default: raw_batch,validated_batch,features; "
        "add predictions,drift_report,attributions to score again)",
    )
    serve_parser = commands.add_parser("serve", help="serve @champion over HTTP (MLflow's scoring protocol)")
    serve_parser.add_argument("model", help="spec name")
    serve_parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=SERVE_PORT, help=f"port (default {SERVE_PORT})")
    args = parser.parse_args(argv)
    if args.command == "spec":
        return spec_init_command(args.name, source=args.source, label=args.label, output=args.output)
    settings = Settings.from_env()
    with without_artifact_progress_bars(settings):
        return _run(parser, args, settings)


@contextlib.contextmanager
def without_artifact_progress_bars(settings: Settings) -> Iterator[None]:
    """MLflow's artifact progress bars off for one command, and the environment as it was after it.

    A value the user set for ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is left alone.
    """
    if ARTIFACT_PROGRESS_BAR_ENV in settings.environment:
        yield
        return
    os.environ[ARTIFACT_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(ARTIFACT_PROGRESS_BAR_ENV, None)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "init":
        from mlops_assets.demo import ensure_instance

        notes = ensure_instance(settings.dagster_home)
        print(f"DAGSTER_HOME={settings.dagster_home}")
        for note in notes:
            print(f"note: {note}")
        return 0
    specs = load_specs(settings.pipelines)
    if args.command == "serve":
        spec = next((s for s in specs if s.name == args.model), None)
        if spec is None:
            parser.error(f"model: no spec named {args.model!r} (have: {', '.join(s.name for s in specs)})")
        return serve_command(settings, spec, host=args.host, port=args.port)
    if args.command == "backfill":
        if args.model not in {s.name for s in specs}:
            parser.error(f"model: no spec named {args.model!r} (have: {', '.join(s.name for s in specs)})")
        import dagster as dg

        from mlops_assets.assets.backfill import chosen_assets

        try:
            assets = chosen_assets([a.strip() for a in args.assets.split(",") if a.strip()])
        except dg.Failure as e:
            parser.error(f"--{e.description}")
        return backfill_command(settings, args.model, batches=args.batches or [], assets=assets)
    if args.command in ("explain", "rollback", "history", "report", "label"):
        if args.model not in {s.name for s in specs}:
            parser.error(f"model: no spec named {args.model!r} (have: {', '.join(s.name for s in specs)})")
        if args.command == "label":
            return label_command(settings, next(s for s in specs if s.name == args.model), file=args.file)
        if args.command == "report":
            return drift_report_command(settings, args.model, batch=args.batch)
        if args.command == "explain":
            if args.row is not None:
                if args.batch is None:
                    parser.error("--row: needs --batch (the batch the row was scored in)")
                return explain_row_command(settings, args.model, batch=args.batch, row=args.row, as_json=args.json)
            return explain_command(settings, args.model, batch=args.batch, version=args.version, as_json=args.json)
        if args.command == "rollback":
            if not args.reason.strip():
                parser.error("--reason: must not be empty")
            return rollback_command(
                settings, args.model, to=args.to, reason=args.reason, registry_only=args.registry_only
            )
        return history_command(settings, args.model, at=args.at)
    if args.command == "demo":
        from mlops_assets.demo import demo

        spec = next((s for s in specs if s.name == args.model), None) if args.model else specs[0]
        if spec is None:
            parser.error(f"--model: no spec named {args.model!r} (have: {', '.join(s.name for s in specs)})")
        return demo(spec, settings)
    parser.error(f"unknown command {args.command!r}")
    return 2


def serve_command(settings: Settings, spec: Any, *, host: str, port: int) -> int:
    """Serves ``spec``'s champion until interrupted, following its aliases (``mlops_assets.serving``)."""
    from mlops_assets.preflight import resolve
    from mlops_assets.serving.server import ServeError, build, run

    registry, lake = _registry_and_lake(settings)
    try:
        server = build(resolve(spec, cache_dir=settings.home / "cache"), registry, lake.root, host=host)
    except (ServeError, ValueError) as e:
        print(f"mlops serve: {e}")
        return 1
    run(server, host=host, port=port)
    return 0


def spec_init_command(name: str, *, source: str, label: str | None, output: str | None) -> int:
    """Writes ``<name>.yaml`` (or ``output``) from a look at the source; never over an existing file."""
    from pathlib import Path

    from mlops_assets.ml.data import read_source_files
    from mlops_assets.spec import SourceSpec, SpecError
    from mlops_assets.spec_init import absolute_source, write_starter_spec

    source = absolute_source(source)
    target = Path(output or f"{name}.yaml")
    if target.exists():
        print(f"mlops spec init: {target} exists; remove it or pass --output")
        return 1
    try:
        frame = read_source_files(SourceSpec(uri=source))
        text = write_starter_spec(name, source=source, label=label, frame=frame, origin=str(target))
    except (SpecError, ValueError) as e:
        print(f"mlops spec init: {e}")
        return 1
    target.write_text(text)
    print(text, end="")
    next_step = "" if label else " (set label.column and its rule first)"
    print(f"\nWrote {target}. Next{next_step}: MLOPS_PIPELINES={target.absolute()} mlops demo")
    return 0


def label_command(settings: Settings, spec: Any, *, file: str) -> int:
    """Joins a labels file to the request log; each served batch it labels lands again."""
    from mlops_assets.serving.labels import join_labels, read_labels

    try:
        labels = read_labels(spec, file)
    except ValueError as e:
        print(f"mlops label: {e}")
        return 1
    _, lake = _registry_and_lake(settings)
    landing = build_resources(settings)["landing"]
    if settings.env != "local":
        landing = landing.process_config_and_initialize()
    report = join_labels(spec, lake, landing, labels)
    for batch, rows in report.matched.items():
        print(f"{spec.name}: batch {batch}: {rows} labelled rows, landed again for scoring")
    print(
        f"{spec.name}: {len(labels)} labels, {len(labels) - report.unmatched} joined, "
        f"{report.unmatched} match no request"
    )
    return 0 if report.matched else 1


def _registry_and_lake(settings: Settings) -> tuple[Any, Any]:
    resources = build_resources(settings)
    if settings.env == "local":
        return resources["registry"], resources["lake"]
    # Outside a run nothing resolves the dg.EnvVar fields of production resources but this.
    return resources["registry"].process_config_and_initialize(), resources["lake"].process_config_and_initialize()


def _instance(settings: Settings) -> dg.DagsterInstance | None:
    """The Dagster instance whose event log holds the validations; None when there is none yet."""
    import dagster as dg

    home = settings.dagster_home
    if not home.exists():
        return None
    return dg.DagsterInstance.from_config(str(home))


def explain_row_command(settings: Settings, model: str, *, batch: str, row: int, as_json: bool) -> int:
    """Prints why one row of a batch got its score, from the batch's stored attributions."""
    from mlops_assets.explain.attributions import render_row, row_of_batch

    _, lake = _registry_and_lake(settings)
    try:
        explained, prediction = row_of_batch(lake, model, batch, row)
    except LookupError as e:
        print(f"mlops explain: {e}")
        return 1
    if as_json:
        print(json.dumps({**explained.to_dict(), "prediction": prediction}, indent=1, default=str))
    else:
        print(render_row(model, explained, prediction))
    return 0


def explain_command(settings: Settings, model: str, *, batch: str | None, version: str | None, as_json: bool) -> int:
    """Prints the lineage of a batch's predictions or of a version (fast: no ML library)."""
    from mlops_assets.explain import explain, render_text

    registry, lake = _registry_and_lake(settings)
    instance = _instance(settings)
    try:
        doc = explain(model=model, registry=registry, lake=lake, instance=instance, batch=batch, version=version)
    except LookupError as e:
        print(f"mlops explain: {e}")
        return 1
    finally:
        if instance is not None:
            instance.dispose()
    if as_json:
        print(json.dumps(doc.to_dict(), indent=1, default=str))
        return 0
    print(render_text(doc))
    if version is not None:
        from mlops_assets.explain.attributions import render_importance, version_importance

        print()
        print(render_importance(version_importance(registry, doc.version.mlflow_run_id)))
    return 0


def rollback_command(settings: Settings, model: str, *, to: str, reason: str, registry_only: bool) -> int:
    """Runs ``<model>_rollback_job`` in this process (recorded in Dagster and in the registry's
    champion history), or with ``registry_only`` moves the alias through the registry alone."""
    if registry_only:
        from resources.registry import PromotionConflict

        registry, _ = _registry_and_lake(settings)
        try:
            move = registry.rollback(name=model, reason=reason, to_version=to or None)
        except (ValueError, LookupError, PromotionConflict) as e:
            print(f"mlops rollback: {e}")
            return 1
        print(
            f"{model}: champion rolled back from version {move.from_version} to {move.to_version} by {move.actor} "
            f"(registry only, no Dagster run): {move.reason}"
        )
        return 0
    import dagster as dg

    from mlops_assets.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def(Job.rollback(model))
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    instance = _instance(settings)
    if instance is None:
        raise RuntimeError(f"no Dagster instance at {settings.dagster_home}")
    try:
        config = {"to_version": to, "reason": reason}
        result = job.execute_in_process(
            run_config={"ops": {op_name(model, Asset.CHAMPION_ROLLBACK): {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )
        if not result.success:
            failures = [
                e.step_failure_data.error.message.strip()
                for e in result.all_events
                if e.is_step_failure and e.step_failure_data.error
            ]
            print(f"mlops rollback: {' '.join(failures) or 'the rollback run failed'} (run {result.run_id})")
            return 1
        # The job also materializes the deployment downstream: read the rollback's own event.
        rollback_key = dg.AssetKey([model, Asset.CHAMPION_ROLLBACK])
        (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == rollback_key]
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
    finally:
        instance.dispose()
    print(
        f"{model}: champion rolled back from version {meta[Meta.FROM_VERSION]} to {meta[Meta.TO_VERSION]} "
        f"in Dagster run {result.run_id}: {meta[Meta.REASON]}\n"
        f"Recorded in the champion history (mlops history {model}); model card: {meta[Meta.MODEL_CARD]}"
    )
    return 0


def drift_report_command(settings: Settings, model: str, *, batch: str) -> int:
    """Runs ``<model>_drift_report_job`` for one batch in this process; prints the report's path."""
    import dagster as dg

    from mlops_assets.definitions import build_definitions

    instance = _instance(settings)
    if instance is None:
        print(f"mlops report drift: no Dagster instance at {settings.dagster_home}; nothing has been scored yet")
        return 1
    try:
        if batch not in instance.get_dynamic_partitions(partitions_name(model)):
            print(f"mlops report drift: --batch {batch!r} is not a batch of {model}")
            return 1
        job = build_definitions(settings).resolve_job_def(Job.drift_report(model))
        result = job.execute_in_process(instance=instance, partition_key=batch, raise_on_error=False)
        if not result.success:
            failures = [
                e.step_failure_data.error.message.strip()
                for e in result.all_events
                if e.is_step_failure and e.step_failure_data.error
            ]
            print(f"mlops report drift: {' '.join(failures) or 'the report run failed'} (run {result.run_id})")
            return 1
        (event,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
        path = event.asset_observation_data.asset_observation.metadata[Meta.DRIFT_HTML_REPORT].value
    finally:
        instance.dispose()
    print(f"{model} batch {batch}: Evidently drift report at {path} (run {result.run_id})")
    return 0


def backfill_command(settings: Settings, model: str, *, batches: list[str], assets: list[str]) -> int:
    """Runs ``<model>_backfill_job`` through ``dagster job execute``; prints each batch's outcome.

    Args:
        assets: per-batch assets in chain order (``chosen_assets``).
    """
    from mlops_assets.batches import sorted_batches
    from mlops_assets.demo import backfill, print_result

    instance = _instance(settings)
    if instance is None:
        print(f"mlops backfill: no Dagster instance at {settings.dagster_home}; run `mlops init` and register batches")
        return 1
    try:
        registered = instance.get_dynamic_partitions(partitions_name(model))
    finally:
        instance.dispose()
    unknown = sorted(set(batches) - set(registered))
    if unknown:
        print(f"mlops backfill: --batch {unknown[:20]} are not registered batches of {model}")
        return 1
    chosen = batches or sorted_batches(registered)
    if not chosen:
        print(f"mlops backfill: {model} has no registered batches (materialize {Asset.SOURCE_BATCHES} or land files)")
        return 1
    env = {**settings.environment, "MLOPS_HOME": str(settings.home), "DAGSTER_HOME": str(settings.dagster_home)}
    env.setdefault(ARTIFACT_PROGRESS_BAR_ENV, "false")
    print(f"{model}: {len(chosen)} batches through {', '.join(assets)} in one run of {Job.backfill(model)}")
    results = backfill(model, chosen, assets, env)
    for result in results:
        print_result(result)
    failed = [r.step.partition for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)} of {len(results)} batches ok"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def history_command(settings: Settings, model: str, *, at: str | None) -> int:
    """Every champion move, oldest first; with ``at``, the champion at that moment."""
    registry, _ = _registry_and_lake(settings)
    if at is not None:
        version = registry.champion_at(model, at)
        print(f"{model}: champion at {at} was version {version}" if version else f"{model}: no champion at {at}")
        return 0
    moves = registry.champion_history(model)
    if not moves:
        print(f"{model}: the champion never moved through mlops")
    for m in moves:
        print(m.describe() + (f": {m.reason}" if m.reason else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
