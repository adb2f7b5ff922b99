"""The options of a module that settles for the run's glance (module_utils/common/glance.py)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  glance_inputs:
    description:
      - The digest of the task, which the module's action plugin computes. After a run that
        leaves the node as the task wants it, the module records it in O(glance_file) with a
        fingerprint of the live state it decides from (see the description). node_info reads
        that fingerprint again at the start of the next run; the same task on a node whose
        fingerprint is still that one is unchanged without asking the node.
      - Without it (the module run without its action plugin, or a run that takes no glance)
        nothing is recorded.
    type: str
  glance_file:
    description: The node's glance index.
    type: path
    default: /var/lib/podnet/glance.json
"""
