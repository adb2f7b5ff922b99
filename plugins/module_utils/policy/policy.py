"""The old import path of NetworkPolicy's core, now policy/model.py and policy/render.py.

Kept only while an importer still uses it (tests/unit/test_policy_after_dnat.py): new code
imports from policy.model and policy.render, and this file goes once nothing imports it.
"""

from ansible_collections.podnet.network.plugins.module_utils.policy.model import (  # noqa: F401
    PolicySpecError,
    describe,
    load_policies,
)
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table  # noqa: F401

__all__ = ["PolicySpecError", "describe", "load_policies", "render_table"]
