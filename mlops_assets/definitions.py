"""The code location: one pipeline per spec, with the resources of the current environment.

Loaded by the webserver, the daemon and every run worker, so it imports no ML library: those
load inside asset bodies and resource methods.
"""

from __future__ import annotations

import dagster as dg

from mlops_assets.factory import build_pipeline
from mlops_assets.preflight import resolve
from mlops_assets.spec import load_specs
from resources.settings import Settings, build_resources


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every spec's pipeline merged, plus resources and executor for ``settings.env``.

    Raises:
        SpecError: a spec is invalid or does not fit its data (names the file and the field).
    """
    on_kubernetes = settings.on_kubernetes
    pipelines = [resolve(spec, cache_dir=settings.home / "cache") for spec in load_specs(settings.pipelines)]
    if on_kubernetes:
        from dagster_k8s import k8s_job_executor

        # On the code location, not on jobs: the implicit asset job behind UI materializations
        # and backfills then uses it too, so GPU op tags reach the pod on every launch path.
        executor: dg.ExecutorDefinition = k8s_job_executor
    else:
        # One process per run: steps share the imported ML libraries instead of paying for
        # them again in a subprocess per step.
        executor = dg.in_process_executor
    return dg.Definitions.merge(
        *(
            build_pipeline(p, on_kubernetes=on_kubernetes, sensor_interval_seconds=settings.sensor_interval_seconds)
            for p in pipelines
        ),
        dg.Definitions(resources=build_resources(settings), executor=executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
