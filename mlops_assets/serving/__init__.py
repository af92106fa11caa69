"""Online serving: the champion behind an HTTP endpoint (``mlops serve``).

The server follows the registry's ``champion`` and ``challenger`` aliases and swaps models
atomically, routes a canary share and scores a shadow as the spec's ``serving`` block says, and
hands every served request to the request log, whose closed files enter the loop as batches.
Nothing here is imported by ``mlops_assets.definitions``.
"""
