"""verl's entry point for rlvr-explore (group ``verl.plugins``): loads the plugin on ``import verl``.

verl logs a plugin that fails to load at DEBUG only, which leaves a user with "Unsupported loss
mode: rlvr_casp" and no cause; this says why at WARNING, with the traceback, before verl goes on.
"""

import logging

try:
    from rlvr_explore.integrations import verl  # noqa: F401
except Exception:
    logging.getLogger("rlvr_explore.verl").warning(
        "rlvr-explore's verl plugin did not load, so its rlvr_* loss modes and advantage estimators are not "
        "registered; VERL_USE_EXTERNAL_PLUGINS=none runs verl without it", exc_info=True)
    raise
