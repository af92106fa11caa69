"""Asset builders, one module per lifecycle layer; each takes a ``ModelPipeline`` and returns
the assets and checks of its layer."""
