"""Action plugin for podnet.network.dns: no round trip when Service DNS is settled.

The module records, after each run, the digest of its task (the model among its arguments)
with a fingerprint of what it plans from (dns/live.py `fingerprint`: its files, running
instances, lo's addresses, the table, whether the instance answers) and what it returned.
When node_info's snapshot at the start of this run finds the same fingerprint for this very
task, that is returned without asking the node.
"""

from ansible_collections.podnet.network.plugins.plugin_utils.glanced import SettledAction


class ActionModule(SettledAction):
    MODULE = "podnet.network.dns"
    unchanged = {"actions": []}
