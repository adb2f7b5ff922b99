"""Action plugin for podnet.network.node_files: no round trip when the glance vouches for it.

node_info's snapshot (podnet_node.glance) holds the digest and mode of every file podnet
wrote on the node. When each file of the task is in it exactly as wanted, and each path to
remove is known to be absent, the task is unchanged without asking the node.
"""

from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.plugin_utils.glanced import GlancedAction


class ActionModule(GlancedAction):
    MODULE = "podnet.network.node_files"

    def vouched(self, snapshot, args, task_vars):
        if glance.files_unchanged(snapshot, args.get("dest"), args.get("files"), args.get("modes"),
                                  args.get("absent") or ()):
            return {"written": [], "removed": []}
        return None
