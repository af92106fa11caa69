"""What the registry raises, and how a step tells an unreachable tracking server from a refusal."""

from __future__ import annotations


class PromotionConflict(RuntimeError):
    """The champion moved between the decision and the promotion (or a concurrent move won)."""


class UnsafeModelError(RuntimeError):
    """A registered model's artifact would need code execution (or an untrusted type) to load."""


class ArtifactIntegrityError(UnsafeModelError):
    """A version's artifact differs from the one whose digest was recorded when it was registered."""


class RegistryLockTimeout(TimeoutError):
    """Another promotion or rollback held the registry lock for too long."""


def is_tracking_outage(error: BaseException) -> bool:
    """Whether ``error`` comes from not reaching the tracking server at all, as opposed to the
    server answering with a refusal (a missing model, a bad request), which a retry cannot fix.

    MLflow's REST client re-raises what ``requests`` raised as an ``MlflowException``, sometimes
    with the original only as implicit context, so the whole chain is searched.
    """
    import requests

    unreachable = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, unreachable):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
