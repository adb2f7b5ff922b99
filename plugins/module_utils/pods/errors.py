"""What goes wrong with a pod, as one exception family for every room of pods/.

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""


class PodError(Exception):
    """A pod could not be created, torn down or inspected."""


class CNIError(PodError):
    """A CNI plugin failed; carries the plugin's own JSON error."""

    def __init__(self, plugin, command, msg, code=None, details=None, container_id=None):
        self.plugin = plugin
        self.command = command
        self.msg = msg
        self.code = code
        self.details = details
        self.container_id = container_id
        text = "CNI %s %s%s failed" % (command, plugin, " for %s" % container_id if container_id else "")
        if code is not None:
            text += " (code %s)" % code
        text += ": %s" % msg
        if details:
            text += " (%s)" % details
        super().__init__(text)
