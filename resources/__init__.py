"""ConfigurableResources for every external system the pipelines touch."""

from resources.lake import Lake
from resources.registry import MlflowRegistry
from resources.settings import Settings, build_resources

__all__ = ["Lake", "MlflowRegistry", "Settings", "build_resources"]
