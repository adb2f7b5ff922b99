#!/usr/bin/python
"""Ansible module: a set of podnet's files under one directory, in one step."""

DOCUMENTATION = r"""
---
module: node_files
short_description: Install a set of podnet's files under one directory in one step
description:
  - Writes each file of I(files) under I(dest) whose content or mode differs from what the
    node has, atomically (a temporary file, fsync, rename), creating directories as needed.
    Files that already match are not touched.
  - One module run for the whole set, where a loop of C(ansible.builtin.copy) costs a round
    trip per file (podnet's boot-time program is 16 files, checked on every run).
  - Files under I(dest) that are not in I(files) are left alone.
  - Several roles write all their small files in one run of this module (C(dest=/)), where a
    C(file) and a C(copy) task per file would cost a round trip each on every run.
  - Each path it writes or removes is noted in the node's glance index (O(glance_file)), whose
    live state node_info reports at the start of every run. The action plugin compares the
    task with that snapshot and does not go to the node at all when every file already is
    as the task wants it, and every path to remove is absent.
options:
  dest:
    description: The directory the files' paths are relative to.
    type: path
    required: true
  files:
    description: The files, as their paths relative to I(dest) mapped to their content (text).
    type: dict
    default: {}
  absent:
    description: Paths relative to I(dest) to remove (files or symlinks) when they exist.
    type: list
    elements: str
    default: []
  modes:
    description: The mode (octal string) of each file that is not C(0644), by its path.
    type: dict
    default: {}
  glance_file:
    description: The node's glance index, where the paths are noted (see the description).
    type: path
    default: /var/lib/podnet/glance.json
notes:
  - Supports check mode and diff mode (each file written, before and after).
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Install the restore runner
  podnet.network.node_files:
    dest: /usr/local/lib/podnet
    files:
      podnet-restore: "{{ lookup('ansible.builtin.file', 'podnet-restore', rstrip=false) }}"
      podnet_node/__init__.py: "{{ lookup('ansible.builtin.file', 'podnet_node_init.py', rstrip=false) }}"
    modes:
      podnet-restore: "0755"
"""

RETURN = r"""
written:
  description: The files that were (or in check mode would be) written, as paths under I(dest).
  returned: always
  type: list
  elements: str
removed:
  description: The paths of I(absent) that were (or would be) removed, as paths under I(dest).
  returned: always
  type: list
  elements: str
glanced:
  description: True when the run's snapshot (node_info) showed every file as wanted, so the
    node was not asked.
  returned: when the node was not asked
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import (
    read_file,
    remove_files,
    write_file,
)


def inside(module, option, path):
    """The absolute path of `path` (relative to dest), checked to stay inside dest."""
    if not isinstance(path, str) or not path or os.path.isabs(path) or ".." in path.split("/"):
        module.fail_json(msg="%s: path %r must be a relative path inside dest" % (option, path))
    return os.path.normpath(os.path.join(module.params["dest"], path))


def wanted(module, path, content):
    """(absolute path, content, mode) of one file, checked."""
    mode = module.params["modes"].get(path, "0644")
    absolute = inside(module, "files", path)
    if not isinstance(content, str):
        module.fail_json(msg="files: %s: content must be text" % path)
    try:
        mode = int(str(mode), 8)
    except ValueError:
        module.fail_json(msg="modes: %s: %r is not an octal mode such as 0644" % (path, mode))
    return absolute, content, mode


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            files=dict(type="dict", default={}),
            absent=dict(type="list", elements="str", default=[]),
            modes=dict(type="dict", default={}),
            glance_file=dict(type="path", default=glance.INDEX),
        ),
        supports_check_mode=True,
    )
    written, diffs, owned = [], [], []
    for name, text in sorted(module.params["files"].items()):
        path, content, mode = wanted(module, name, text)
        owned.append(path)
        current_mode = os.stat(path).st_mode & 0o7777 if os.path.isfile(path) else None
        before = read_file(module, path)
        if before == content and current_mode == mode:
            continue
        written.append(os.path.relpath(path, module.params["dest"]))
        diffs.append({"before_header": path if before is not None else "%s (absent)" % path,
                      "after_header": "%s (mode %04o)" % (path, mode), "before": before or "",
                      "after": content})
        if not module.check_mode:
            write_file(module, path, content, mode)
    gone = [inside(module, "absent", name) for name in module.params["absent"]]
    removed = [os.path.relpath(action[len("remove "):], module.params["dest"])
               for action in remove_files(module, gone)]
    if not module.check_mode:
        glance.remember(module, module.params["glance_file"], files=owned + gone)
    result = {"changed": bool(written or removed), "written": written, "removed": removed}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
