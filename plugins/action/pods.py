"""Action plugin for podnet.network.pods: no round trip when the pods are settled.

The module records, after each run, the digest of its task with a fingerprint of what it
decides from (pods/lifecycle.py `fingerprint`: the records, each pod's netns and server,
the conflist, resolv.conf) and the pods it returned. When node_info's snapshot at the start
of this run finds the same fingerprint for this very task, those pods are returned without
asking the node.
"""

from ansible_collections.podnet.network.plugins.plugin_utils.glanced import SettledAction


class ActionModule(SettledAction):
    MODULE = "podnet.network.pods"
    unchanged = {"created": [], "updated": [], "removed": [], "pods": {}}
