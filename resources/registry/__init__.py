"""The MLflow tracking store and model registry, behind one resource (``MlflowRegistry``).

Governance lives here because MLflow has no compare-and-set and no alias history: ``champion``
moves only through ``promote`` and ``rollback`` (``champion``), every move is recorded, and models
load only from the registry, never by unpickling, through a verified cache (``loading``).
"""

from mlops_assets import contract
from resources.registry.champion import ChampionMove, MoveKind, MoveState
from resources.registry.errors import (
    ArtifactIntegrityError,
    PromotionConflict,
    RegistryLockTimeout,
    UnsafeModelError,
    is_tracking_outage,
)
from resources.registry.resource import MlflowRegistry
from resources.registry.versions import RegisteredModel

# Re-exported under their historical names; the contract module defines them.
CHAMPION = contract.CHAMPION
CHALLENGER = contract.CHALLENGER
TAG_FINGERPRINT = contract.MlflowTag.TRAINING_FINGERPRINT
TAG_DAGSTER_RUN = contract.MlflowTag.DAGSTER_RUN_ID
TAG_CODE_VERSION = contract.MlflowTag.CODE_VERSION
TAG_BATCHES = contract.MlflowTag.TRAINING_BATCHES
TAG_FAMILY = contract.MlflowTag.MODEL_FAMILY
TAG_PROMOTED = contract.MlflowTag.PROMOTED
TAG_ROLLED_BACK_TO = contract.MlflowTag.ROLLED_BACK_TO
TAG_LAST_CHAMPION_MOVE = contract.MlflowTag.LAST_CHAMPION_MOVE
TAG_MOVE_PREFIX = contract.CHAMPION_MOVE_TAG_PREFIX
TAG_REGISTERED_VERSION = contract.MlflowTag.REGISTERED_VERSION
TAG_ARTIFACT_DIGEST = contract.MlflowTag.ARTIFACT_DIGEST

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "TAG_ARTIFACT_DIGEST",
    "TAG_BATCHES",
    "TAG_CODE_VERSION",
    "TAG_DAGSTER_RUN",
    "TAG_FAMILY",
    "TAG_FINGERPRINT",
    "TAG_LAST_CHAMPION_MOVE",
    "TAG_MOVE_PREFIX",
    "TAG_PROMOTED",
    "TAG_REGISTERED_VERSION",
    "TAG_ROLLED_BACK_TO",
    "ArtifactIntegrityError",
    "ChampionMove",
    "MlflowRegistry",
    "MoveKind",
    "MoveState",
    "PromotionConflict",
    "RegisteredModel",
    "RegistryLockTimeout",
    "UnsafeModelError",
    "is_tracking_outage",
]
