"""Assembling and running one model's server: ``mlops serve <model>``.

One uvicorn worker with httptools and uvloop (no framework, see ``app``). Native thread pools are
limited to one thread for the process (threadpoolctl): OpenMP's spinning barriers, started with
one thread per core on a shared machine, turned a 2 ms one-row predict into a p99 of 151 ms.

A non-loopback bind refuses to start unless the spec's ``serving.token_env`` variable holds a
bearer token, which /invocations and /metrics then require (also on loopback when it is set).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any

from mlops_assets.serving.app import ServingApp
from mlops_assets.serving.holder import ModelHolder
from mlops_assets.serving.metrics import Metrics
from mlops_assets.serving.protocol import Columns
from mlops_assets.serving.routing import Background

log = logging.getLogger("mlops.serve")


class ServeError(RuntimeError):
    """The server cannot start as asked; the message says why and what to set."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(host: str, token_env: str, environ: dict[str, str] | None = None) -> str | None:
    """The token requests must carry; None on loopback without one.

    Raises:
        ServeError: ``host`` is not a loopback address and ``token_env`` is unset or empty.
    """
    token = (os.environ if environ is None else environ).get(token_env) or None
    if token is None and not is_loopback(host):
        raise ServeError(
            f"--host {host}: refusing to serve beyond this machine without a bearer token; set {token_env} "
            "(serving.token_env) to a secret that clients send as 'Authorization: Bearer <token>', "
            "or bind 127.0.0.1"
        )
    return token


@dataclass
class Server:
    """The pieces of one model's server, built by ``build``; ``app`` is what uvicorn runs."""

    app: ServingApp
    holder: ModelHolder
    background: Background
    request_log: Any


def build(pipeline: Any, registry: Any, lake_root: str, *, host: str, request_log: Any = None) -> Server:
    """The server of ``pipeline`` (a resolved ``ModelPipeline``) on ``registry``.

    Args:
        request_log: what served requests are appended to, with a ``make_batch`` building what it
            takes; None builds the product's ``RequestLog`` when ``serving.request_log.enabled``.
    """
    spec = pipeline.spec
    serving = spec.serving
    token = bearer_token(host, serving.token_env)
    columns = Columns(
        numeric=list(pipeline.columns.numeric),
        categorical=list(pipeline.columns.categorical),
        optional=[
            c for c in spec.sensitive_features if c not in pipeline.columns.numeric + pipeline.columns.categorical
        ],
    )
    if serving.canary.key != "request_id" and serving.canary.key not in columns.allowed:
        raise ServeError(
            f"{spec.origin}: serving.canary.key: {serving.canary.key!r} is neither 'request_id' nor an input "
            f"column {columns.allowed}"
        )
    make_batch: Any = None
    if request_log is None and serving.request_log.enabled:
        from mlops_assets.serving.request_log import RequestLog, ServedBatch

        request_log, make_batch = RequestLog(spec, lake_root, columns=pipeline.columns), ServedBatch
    elif request_log is not None:
        make_batch = request_log.make_batch
    metrics = Metrics(spec.name)
    holder = ModelHolder(
        registry,
        spec.name,
        columns,
        poll_seconds=serving.poll_seconds,
        follow_challenger=serving.shadow or serving.canary.share > 0,
        on_swap=metrics.swapped,
        on_error=metrics.alias_error,
    )
    background = Background(
        append=request_log.append if request_log is not None else None,
        make_batch=make_batch,
        on_shadow=metrics.shadow,
        on_dropped=metrics.dropped,
    )

    def startup() -> None:
        # The first load runs in the poll thread too: /health says 503 until it is done.
        holder.start()

    def shutdown() -> None:
        holder.stop()
        background.close()
        if request_log is not None:
            request_log.close()

    app = ServingApp(
        holder,
        metrics,
        background,
        canary_share=serving.canary.share,
        canary_key=serving.canary.key,
        shadow=serving.shadow,
        max_rows=serving.max_rows,
        max_body_bytes=serving.max_body_bytes,
        token=token,
        on_startup=startup,
        on_shutdown=shutdown,
    )
    return Server(app=app, holder=holder, background=background, request_log=request_log)


def run(server: Server, *, host: str, port: int) -> None:
    """Serves until interrupted (SIGINT/SIGTERM), then finishes the follow-ups and closes the log."""
    import sys

    import uvicorn
    from threadpoolctl import threadpool_limits

    # The shadow, the request-log writer and model loads run in threads beside the event loop; a
    # thread holding the GIL keeps it for up to the switch interval (5 ms by default) before the
    # loop may answer. 0.5 ms took the 300 req/s p99 from 10.7 to 4.2 ms in `make bench-serve`
    # (peak 690 to 615 req/s), one run each on this 2-core machine.
    sys.setswitchinterval(0.0005)
    with threadpool_limits(limits=1):
        config = uvicorn.Config(
            server.app,
            host=host,
            port=port,
            http="httptools",
            loop="uvloop",
            lifespan="on",
            access_log=False,
            log_level="warning",
            workers=1,
        )
        print(
            f"mlops serve: {server.holder.name} on http://{host}:{port} (POST /invocations, GET /health, GET /metrics)"
        )
        uvicorn.Server(config).run()
