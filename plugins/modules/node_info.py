#!/usr/bin/python
"""Ansible module: the facts podnet needs about a node, in one fast call."""

DOCUMENTATION = r"""
---
module: node_info
short_description: Facts podnet needs about a node
description:
  - Reports the operating system, the node IP and the interface that carries it
    (with its MTU and its network), the IPv4 subnets the node is connected to (to choose
    between a direct route and VXLAN per peer), whether bridge netfilter is available, the
    service manager, and what podnet persisted on the node at earlier runs (its podCIDR, the
    Service allocations).
  - A persisted file that is not what podnet wrote (not JSON, or of another shape) fails
    the module, naming the file, rather than being skipped.
  - Reads only; never changes the node. Much cheaper than C(setup), which is
    why podnet's plays use it instead of gathering facts.
options:
  node_ip:
    description:
      - The node's address as the inventory states it. When omitted, the source
        address of the default route is the node IP.
    type: str
  state_file:
    description: Where podnet persists the node's allocation.
    type: path
    default: /etc/podnet/node.json
  services_state_file:
    description: Where podnet persists the clusterIPs and nodePorts it allocated.
    type: path
    default: /etc/podnet/services/allocations.json
  proxy_state_dir:
    description: Where the Service proxy modules keep their records (their C(state_dir)).
    type: path
    default: /var/lib/podnet
  firewall:
    description:
      - Also report what on the node would drop cluster traffic (C(firewall_report), the
        sentences the firewall module reports), reading the ruleset only.
    type: bool
    default: false
  glance:
    description:
      - Whether to report the glance (C(glance)). A run without it neither skips a task nor
        records a settled state (reset, which removes the index).
    type: bool
    default: true
  glance_file:
    description:
      - The node's glance index (module_utils/common/glance.py), where node_files and sysctl
        note the files and sysctls they own. Their live state is reported (C(glance)), so a
        task whose files and values already are as it wants them costs no round trip.
    type: path
    default: /var/lib/podnet/glance.json
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Learn the node
  podnet.network.node_info:
    node_ip: "{{ node_ip | default(omit) }}"
"""

RETURN = r"""
ansible_facts:
  description: C(podnet_node) with os_id, os_version_id, os_family, node_ip,
    node_network (the node IP with its prefix length), interface, mtu, networks,
    bridge_netfilter, service_mgr, persisted_pod_cidr, persisted_service_allocations
    (compact JSON text, one string where 10,000 Services' entries would be copied by Ansible
    at every task that reads hostvars), proxy_records (the names of the Service proxy
    modules' records present, since a backend has rules or a boot file only with its record),
    kernel_modules (the names under /sys/module, loaded or built in), packages_installed (the
    names dpkg's database lists as installed; empty without one) and glance (the live
    state of what the glance index lists, the sha256 and mode of each file, the value of each
    sysctl and the settled states whose live fingerprint is still the recorded one, read at
    the start of the run), on a systemd node units (podnet-*.service units, each with
    enabled, its unit file state, and active, its active state, as systemctl lists them), and
    with O(firewall) firewall_report.
  returned: always
  type: dict
  contains:
    podnet_node_moved:
      description: False, the fact the glanced action plugins set once they changed the node
        in this run (no settled state is vouched for after that).
      type: bool
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.module_utils.firewall.apply import FirewallError, survey
from ansible_collections.podnet.network.plugins.module_utils.services.model import (
    ServiceSpecError,
    check_allocations,
)


def read_os_release():
    info = {}
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep:
                    info[key] = value.strip('"')
    except OSError:
        pass
    return info


def ip_json(module, *args):
    rc, out, err = module.run_command(["ip", "-j"] + list(args))
    if rc != 0:
        module.fail_json(msg="ip %s failed: %s" % (" ".join(args), err.strip()))
    return json.loads(out or "[]")


def find_node_address(module, node_ip):
    """Return (ip, interface, prefix length) for the node IP, given or from the default route."""
    if not node_ip:
        for route in ip_json(module, "-4", "route", "show", "default"):
            dev = route.get("dev")
            if not dev:
                continue
            for link in ip_json(module, "-4", "addr", "show", "dev", dev):
                for addr in link.get("addr_info", []):
                    if addr.get("scope") == "global":
                        return addr["local"], dev, addr.get("prefixlen", 32)
        module.fail_json(msg="node_ip is not set in the inventory and this node has no default "
                             "route with a global IPv4 address to take it from")
    for link in ip_json(module, "-4", "addr", "show"):
        for addr in link.get("addr_info", []):
            if addr.get("local") == node_ip:
                return node_ip, link["ifname"], addr.get("prefixlen", 32)
    module.fail_json(msg="node_ip %s (inventory) is not an address of this node" % node_ip)


def connected_networks(module):
    """Every global IPv4 address as address/prefix: the subnets this node reaches directly."""
    networks = []
    for link in ip_json(module, "-4", "addr", "show"):
        for addr in link.get("addr_info", []):
            if addr.get("scope") == "global" and addr.get("local"):
                networks.append("%s/%s" % (addr["local"], addr["prefixlen"]))
    return sorted(networks)


def proxy_records(directory):
    """The names of the Service proxy modules' records (proxy-*.json) in `directory`."""
    try:
        return sorted(name for name in os.listdir(directory)
                      if name.startswith("proxy-") and name.endswith(".json"))
    except OSError:
        return []


def kernel_modules():
    """The kernel's modules by name, loaded or built in (/sys/module); a built-in one without
    parameters is not listed, so a role still asks modprobe, which knows it."""
    try:
        return sorted(os.listdir("/sys/module"))
    except OSError:
        return []


DPKG_STATUS = "/var/lib/dpkg/status"


def installed_packages(path=DPKG_STATUS):
    """The packages dpkg's database lists as installed (what `dpkg-query -W` reads), sorted;
    [] without one. Milliseconds, where a dpkg-query task costs a round trip on every run."""
    installed, name = set(), None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Package: "):
                    name = line[len("Package: "):].strip()
                elif line.startswith("Status: ") and name and line.split()[-1] == "installed":
                    installed.add(name)
    except OSError:
        return []
    return sorted(installed)


class RecordError(ValueError):
    """A persisted file podnet cannot trust; the message names it."""


def parse_units(unit_files, units):
    """{unit: {"enabled": its unit file state, "active": its active state}} from the lines of
    `systemctl list-unit-files --no-legend` and `systemctl list-units --all --plain
    --no-legend` (UNIT STATE ... and UNIT LOAD ACTIVE SUB ...); a unit one of them does not
    list lacks that key."""
    found = {}
    for line in unit_files.splitlines():
        words = line.split()
        if len(words) >= 2:
            found.setdefault(words[0], {})["enabled"] = words[1]
    for line in units.splitlines():
        words = line.split()
        if len(words) >= 3:
            found.setdefault(words[0], {})["active"] = words[2]
    return found


def podnet_units(module):
    """The state of podnet's systemd units (podnet-*.service): the restore role enables and
    starts them only when they are not, instead of asking systemd on every run. {} when
    systemctl fails or is missing (then the role asks)."""
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return {}
    listed, quiet = [], ["--no-legend", "--no-pager", "--type=service", "podnet-*"]
    for argv in (["list-unit-files", *quiet], ["list-units", "--all", "--plain", *quiet]):
        rc, out, _err = module.run_command([systemctl, *argv])
        if rc != 0:
            return {}
        listed.append(out)
    return parse_units(*listed)


def read_persisted(path):
    """The JSON object podnet persisted at `path`; {} when there is none. A file that is not
    what podnet writes is an error: skipping it would allocate afresh and move pods or Services."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RecordError("cannot read %s: %s" % (path, exc.strerror)) from None
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise RecordError("%s is not the JSON podnet writes (%s): fix it, or remove it to let the plan "
                          "allocate afresh" % (path, str(exc)[:200])) from None
    if not isinstance(record, dict):
        raise RecordError("%s must hold a JSON object, got a %s: fix it, or remove it to let the plan "
                          "allocate afresh" % (path, type(record).__name__))
    return record


def main():
    module = AnsibleModule(
        argument_spec=dict(
            node_ip=dict(type="str"),
            state_file=dict(type="path", default="/etc/podnet/node.json"),
            services_state_file=dict(type="path", default="/etc/podnet/services/allocations.json"),
            proxy_state_dir=dict(type="path", default="/var/lib/podnet"),
            firewall=dict(type="bool", default=False),
            glance=dict(type="bool", default=True),
            glance_file=dict(type="path", default=glance.INDEX),
        ),
        supports_check_mode=True,
    )
    os_release = read_os_release()
    node_ip, interface, prefixlen = find_node_address(module, module.params["node_ip"])
    with open("/sys/class/net/%s/mtu" % interface) as handle:
        mtu = int(handle.read().strip())
    try:
        persisted = read_persisted(module.params["state_file"])
        allocations = read_persisted(module.params["services_state_file"])
        check_allocations(allocations, module.params["services_state_file"])
    except (RecordError, ServiceSpecError) as exc:
        module.fail_json(msg=str(exc))
    facts = {
        "os_id": os_release.get("ID", ""),
        "os_id_like": os_release.get("ID_LIKE", ""),
        "os_version_id": os_release.get("VERSION_ID", ""),
        "os_pretty_name": os_release.get("PRETTY_NAME", ""),
        "node_ip": node_ip,
        "node_network": "%s/%d" % (node_ip, prefixlen),
        "interface": interface,
        "mtu": mtu,
        "networks": connected_networks(module),
        "bridge_netfilter": os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "service_mgr": "systemd" if os.path.isdir("/run/systemd/system") else "other",
        "persisted_pod_cidr": persisted.get("pod_cidr"),
        "persisted_service_allocations": json.dumps(allocations, separators=(",", ":"), sort_keys=True),
        "proxy_records": proxy_records(module.params["proxy_state_dir"]),
        "kernel_modules": kernel_modules(),
        "packages_installed": installed_packages(),
    }
    if facts["service_mgr"] == "systemd":
        facts["units"] = podnet_units(module)
    # One reading of nft's chains and of the firewall serves the glance and the survey.
    reading = glance.Reading()
    if module.params["glance"]:
        facts["glance"] = glance.look(module.params["glance_file"], reading)
    if module.params["firewall"]:
        try:
            facts["firewall_report"] = survey(reading.firewall_ruleset())
        except (FirewallError, ValueError) as exc:
            module.fail_json(msg="cannot read the node's firewall: %s" % exc)
    # A new snapshot: nothing has moved on the node since (see plugin_utils/glanced.py).
    module.exit_json(changed=False, ansible_facts={"podnet_node": facts, "podnet_node_moved": False})


if __name__ == "__main__":
    main()
