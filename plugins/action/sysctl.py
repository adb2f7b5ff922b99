"""Action plugin for podnet.network.sysctl: no round trip when the glance vouches for it.

node_info's snapshot (podnet_node.glance) holds the live value of every sysctl podnet set
and the digest of its persisted file. When each sysctl of the task already has its value
and the file is the one the module would write, the task is unchanged without asking the node.
"""

from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.plugin_utils.glanced import GlancedAction

DEFAULT_PATH = "/etc/sysctl.d/90-podnet.conf"


class ActionModule(GlancedAction):
    MODULE = "podnet.network.sysctl"

    def vouched(self, snapshot, args, task_vars):
        if glance.sysctls_unchanged(snapshot, args.get("sysctls"), args.get("path", DEFAULT_PATH)):
            return {"set": [], "file_changed": False}
        return None
