#!/usr/bin/python
"""Ansible module: set kernel parameters now and persist them in one sysctl.d file."""

DOCUMENTATION = r"""
---
module: sysctl
short_description: Set node sysctls live and persist them in one sysctl.d file
description:
  - Sets each sysctl in I(sysctls) in the running kernel (through /proc/sys, in
    the network namespace the module runs in) and writes them all to I(path),
    so they are back after a reboot (systemd-sysctl, or podnet's restore).
  - Only the file at I(path) is written; other sysctl.d files are left alone.
  - Modelled on ansible.posix.sysctl, which podnet cannot depend on (no Galaxy).
options:
  sysctls:
    description: Mapping of sysctl name (dotted) to value.
    type: dict
    required: true
  path:
    description: The sysctl.d file podnet owns.
    type: path
    default: /etc/sysctl.d/90-podnet.conf
  glance_file:
    description:
      - The node's glance index, where the sysctls and I(path) are noted. node_info reports
        their live state at the start of a run, and the action plugin does not go to the
        node when every value and the file already are as wanted.
    type: path
    default: /var/lib/podnet/glance.json
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Forward IP and let bridged pod traffic see netfilter
  podnet.network.sysctl:
    sysctls:
      net.ipv4.ip_forward: 1
      net.bridge.bridge-nf-call-iptables: 1
"""

RETURN = r"""
set:
  description: The sysctls whose live value was changed, as C(name = value).
  returned: always
  type: list
file_changed:
  description: Whether I(path) was (or would be) rewritten.
  returned: always
  type: bool
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import node_lock
from ansible_collections.podnet.network.plugins.module_utils.common.sysctl import (
    normalized,
    proc_path,
    render,
    same_value,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysctls=dict(type="dict", required=True),
            path=dict(type="path", default="/etc/sysctl.d/90-podnet.conf"),
            glance_file=dict(type="path", default=glance.INDEX),
        ),
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.sysctl")
    sysctls = normalized(module.params["sysctls"])
    path = module.params["path"]

    live_before, to_set = {}, []
    for name, value in sorted(sysctls.items()):
        try:
            with open(proc_path(name)) as handle:
                current = handle.read().strip()
        except OSError as exc:
            module.fail_json(msg="sysctl %s: cannot read %s (%s); is the kernel feature loaded?"
                                 % (name, proc_path(name), exc.strerror))
        live_before[name] = current
        if not same_value(current, value):
            to_set.append(name)

    content = render(sysctls)
    try:
        with open(path) as handle:
            old_content = handle.read()
    except OSError:
        old_content = ""
    file_changed = old_content != content

    if not module.check_mode:
        for name in to_set:
            try:
                with open(proc_path(name), "w") as handle:
                    handle.write(sysctls[name])
            except OSError as exc:
                module.fail_json(msg="sysctl %s: cannot set %s (%s)" % (name, sysctls[name], exc.strerror))
        if file_changed:
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".podnet-sysctl.")
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            os.chmod(tmp, 0o644)
            module.atomic_move(tmp, path)

    if not module.check_mode:
        glance.remember(module, module.params["glance_file"], sysctls=sorted(sysctls),
                        files=[os.path.normpath(path)])

    before = "".join("%s = %s\n" % (n, live_before[n]) for n in sorted(live_before))
    after = "".join("%s = %s\n" % (n, sysctls[n]) for n in sorted(sysctls))
    module.exit_json(
        changed=bool(to_set) or file_changed,
        set=["%s = %s" % (n, sysctls[n]) for n in to_set],
        file_changed=file_changed,
        diff=[{"before_header": "live", "after_header": "desired", "before": before, "after": after},
              {"before_header": path, "after_header": path, "before": old_content, "after": content}],
    )


if __name__ == "__main__":
    main()
