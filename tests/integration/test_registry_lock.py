"""Clients of one tracking server that reach it by different addresses exclude each other's
champion moves: the advisory-lock key comes from the registry's own identity of the model, not
from the URI text a client was given."""

from __future__ import annotations

import pytest

from resources.registry import CHAMPION, MlflowRegistry, RegistryLockTimeout
from tests.integration.conftest import ProdStack

pytestmark = pytest.mark.integration

NAME = "lock_probe"


def test_127_0_0_1_and_localhost_take_the_same_champion_lock(prod_stack: ProdStack) -> None:
    by_ip = prod_stack.tracking_uri
    assert by_ip.startswith("http://127.0.0.1:")
    by_name = by_ip.replace("127.0.0.1", "localhost")
    lock_by_ip = prod_stack.env["MLOPS_REGISTRY_LOCK_URI"]
    holder = MlflowRegistry(tracking_uri=by_ip, artifact_root="", lock_uri=lock_by_ip)
    client = holder.client()
    client.create_registered_model(NAME)
    experiment = holder.experiment_id(NAME)
    for _ in range(2):
        run = client.create_run(experiment).info.run_id
        client.create_model_version(NAME, source=f"runs:/{run}/model", run_id=run)
    holder.promote(name=NAME, version="1", expected_champion=None, record={})

    # Another machine's view: the server by name, and the lock database by name too.
    other = MlflowRegistry(
        tracking_uri=by_name,
        artifact_root="",
        lock_uri=lock_by_ip.replace("@127.0.0.1:", "@localhost:"),
        lock_timeout_s=0.5,
    )
    assert other.by_alias(NAME, CHAMPION).version == "1"
    with holder.champion_lock(NAME):
        with pytest.raises(RegistryLockTimeout):
            other.promote(name=NAME, version="2", expected_champion="1", record={})
    assert holder.by_alias(NAME, CHAMPION).version == "1"
    other.promote(name=NAME, version="2", expected_champion="1", record={})
    assert holder.by_alias(NAME, CHAMPION).version == "2"
