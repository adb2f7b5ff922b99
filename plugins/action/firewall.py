"""Action plugin for podnet.network.firewall: no round trip when the firewall is settled.

The module records, after each run, the digest of its task with a fingerprint of the chains
and rules it read and left (firewall/apply.py `fingerprint`; common/glance.py `settle`).
When node_info's snapshot at the start of this run finds the same fingerprint for this very
task, the task is unchanged without asking the node. In check mode (the plan's survey) the
module always runs.
"""

from ansible_collections.podnet.network.plugins.plugin_utils.glanced import SettledAction


class ActionModule(SettledAction):
    MODULE = "podnet.network.firewall"
    unchanged = {"findings": [], "report": [], "actions": []}
