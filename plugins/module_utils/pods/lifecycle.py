"""A test pod's life: created (netns, resolv.conf, CNI ADD, echo server), checked,
torn down, and brought back after a reboot with the IP it had.

A pod here is a network namespace (`ip netns add`), wired by the node's
conflist (bridge + host-local + portmap), plus one podnet-echo process inside
it. Its state lives in one JSON file per pod under the state dir, holding
everything needed to tear it down or bring it back after a reboot (/run is
gone then, with every netns and process): the recorded IP, the CNI result and
the network config the pod was added with, because CNI DEL must be given the
config of the ADD, not whatever the conflist says today.

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""

import hashlib
import json
import os

from .cni_exec import (
    DEFAULT_CNI_BIN_DIR,
    clean_leases,
    cni_add,
    cni_del,
    lease_data_dir,
    load_conflist,
    loopback_add,
    loopback_del,
    result_ip,
)
from .errors import CNIError, PodError
from .netns import forget_neighbour, netns_add, netns_del, netns_exists, netns_path
from .resolv import NETNS_ETC_DIR, read_resolv_conf, remove_resolv_conf, write_resolv_conf
from .server import (
    DEFAULT_ECHO_SERVER,
    DEFAULT_PYTHON,
    find_servers,
    listen_specs,
    server_alive,
    start_server,
    stop_server,
)
from .state import log_file, read_states, remove_state, write_state

DEFAULT_STATE_DIR = "/var/lib/podnet/pods"


def pod_health(state):
    """(healthy, reason): is the recorded pod really there - netns, address and server?"""
    if not state.get("ip"):
        return False, "no IP recorded"
    if not netns_exists(state["netns"]):
        return False, "netns %s is missing" % state["netns"]
    if listen_specs(state.get("ports")):
        if not server_alive(state.get("pid"), state.get("echo_server", DEFAULT_ECHO_SERVER),
                            state["name"], state["netns"]):
            return False, "echo server (pid %s) is not running" % state.get("pid")
    return True, "running"


def fingerprint(state_dir, conflist, netns_etc_dir=None):
    """A digest of everything the pods module decides from: the recorded pods, each one's
    health (netns and server), the CNI conflist's text, and each pod's resolv.conf when
    podnet writes them (`netns_etc_dir`)."""
    states = read_states(state_dir)
    try:
        with open(conflist, "rb") as handle:
            network = hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        network = None
    parts = {"network": network, "pods": {}}
    for key, state in sorted(states.items()):
        health = pod_health(state) if state.get("netns") else (False, "no netns recorded")
        resolv = None
        if netns_etc_dir and state.get("netns"):
            resolv = read_resolv_conf(state["netns"], netns_etc_dir)
        parts["pods"][key] = [state, health, resolv]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


# --- pods ---------------------------------------------------------------------

def teardown_pod(state, bin_dir=DEFAULT_CNI_BIN_DIR, state_dir=None):
    """Stop the server, CNI DEL, delete the netns; the state file is removed only
    when `state_dir` is given. Safe on a half-created or already-gone pod."""
    echo_server = state.get("echo_server", DEFAULT_ECHO_SERVER)
    netns = state["netns"]
    stop_server(state.get("pid"), echo_server, state["name"])
    for pid in find_servers(netns, echo_server):
        stop_server(pid, echo_server)
    path = netns_path(netns)
    network = state.get("network")
    if network:
        cni_del(network, state["container_id"], path, bin_dir, prev_result=state.get("cni_result"))
    loopback_del(state["container_id"], path, bin_dir)
    netns_del(netns)
    if state_dir:
        if state.get("resolv_conf") is not None:
            remove_resolv_conf(netns, state.get("netns_etc_dir", NETNS_ETC_DIR))
        remove_state(state_dir, state)


def create_pod(spec, conflist, state_dir, bin_dir=DEFAULT_CNI_BIN_DIR, echo_server=DEFAULT_ECHO_SERVER,
               ip=None, python=DEFAULT_PYTHON):
    """Create one pod from scratch and record it; returns its state.

    spec: name, namespace, labels, ports, netns, container_id, spec_hash; optionally
    resolv_conf (the text of the pod's /etc/resolv.conf) and netns_etc_dir.
    `ip` asks for that address (the pod's previous one); if host-local refuses
    it (taken, or outside a new range), the pod gets any free address instead.
    The state file is written before anything is created, so a failure half way
    leaves a record the next run tears down.
    """
    state = {
        "name": spec["name"],
        "namespace": spec["namespace"],
        "labels": dict(spec.get("labels") or {}),
        "ports": list(spec.get("ports") or []),
        "netns": spec["netns"],
        "container_id": spec["container_id"],
        "spec_hash": spec.get("spec_hash"),
        "echo_server": echo_server,
        "network": conflist,
        "ip": None,
        "pid": None,
        "cni_result": None,
    }
    if spec.get("resolv_conf") is not None:
        state["resolv_conf"] = spec["resolv_conf"]
        state["netns_etc_dir"] = spec.get("netns_etc_dir") or NETNS_ETC_DIR
    write_state(state_dir, state)
    path = netns_path(state["netns"])
    netns_add(state["netns"])
    if state.get("resolv_conf") is not None:
        # Before the server starts: `ip netns exec` mounts it as the pod's /etc/resolv.conf.
        write_resolv_conf(state["netns"], state["resolv_conf"], state["netns_etc_dir"])
    loopback_add(state["container_id"], path, bin_dir)
    try:
        result = cni_add(conflist, state["container_id"], path, bin_dir, ip=ip)
    except CNIError:
        if not ip:
            raise
        result = cni_add(conflist, state["container_id"], path, bin_dir)
    state["cni_result"] = result
    state["ip"] = result_ip(result)
    if not state["ip"]:
        raise PodError("CNI ADD for pod %s/%s returned no IPv4 address: %s"
                       % (state["namespace"], state["name"], json.dumps(result)[:500]))
    write_state(state_dir, state)
    forget_neighbour(state["ip"], [other["netns"] for other in read_states(state_dir).values()
                                   if other.get("netns") and other["netns"] != state["netns"]])
    state["pid"] = start_server(state["netns"], state["name"], state["ports"], echo_server,
                                log_file(state_dir, state["namespace"], state["name"]), python)
    write_state(state_dir, state)
    return state


def recreate_pod(spec, conflist, state_dir, old_state=None, bin_dir=DEFAULT_CNI_BIN_DIR,
                 echo_server=DEFAULT_ECHO_SERVER, python=DEFAULT_PYTHON):
    """Tear down whatever is left of the pod, then create it again, asking for its old IP."""
    ip = None
    if old_state:
        ip = old_state.get("ip")
        teardown_pod(old_state, bin_dir)
    else:
        # No record, but a netns or lease from a lost run may still be there.
        teardown_pod({"name": spec["name"], "netns": spec["netns"], "container_id": spec["container_id"],
                      "echo_server": echo_server, "network": conflist}, bin_dir)
    return create_pod(spec, conflist, state_dir, bin_dir, echo_server, ip=ip, python=python)


def restore_pods(state_dir=DEFAULT_STATE_DIR, bin_dir=DEFAULT_CNI_BIN_DIR, conflist=None,
                 python=DEFAULT_PYTHON):
    """Bring back every recorded pod whose netns or server is gone (after a reboot).

    Each pod is re-created with the network config it was recorded with (or
    `conflist` if given) and asks host-local for its recorded IP. One pod failing
    does not stop the others. Returns [{pod, status, ip, old_ip, error}] where
    status is running (was fine), restored or failed.
    """
    report = []
    for key, state in read_states(state_dir).items():
        healthy, _reason = pod_health(state)
        if healthy:
            report.append({"pod": key, "status": "running", "ip": state["ip"], "old_ip": state["ip"]})
            continue
        spec = {k: state.get(k) for k in ("name", "namespace", "labels", "ports", "netns", "container_id",
                                          "spec_hash", "resolv_conf", "netns_etc_dir")}
        network = conflist or state.get("network")
        try:
            if not network:
                raise PodError("pod %s has no recorded network config" % key)
            new = recreate_pod(spec, network, state_dir, state, bin_dir,
                               state.get("echo_server", DEFAULT_ECHO_SERVER), python)
            report.append({"pod": key, "status": "restored", "ip": new["ip"], "old_ip": state.get("ip")})
        except (PodError, OSError) as e:
            report.append({"pod": key, "status": "failed", "ip": None, "old_ip": state.get("ip"),
                           "error": str(e)})
    return report


def restore_at_boot(state_dir=DEFAULT_STATE_DIR, conflist=None, cni_bin_dir=DEFAULT_CNI_BIN_DIR):
    """The test pods' boot-time restore step: release the host-local leases (of the
    network `conflist` names) of pods that no longer exist (after a reboot: all of them),
    then bring every recorded pod back asking for the IP it had, so Services on other
    nodes that point at it stay right.

    Returns the lines to report; raises PodError naming every pod not restored.
    """
    if not os.path.isdir(state_dir):
        return ["no test pods recorded in %s" % state_dir]
    states = read_states(state_dir)
    live = [state["container_id"] for state in states.values() if pod_health(state)[0]]
    if conflist and os.path.exists(conflist):
        clean_leases(lease_data_dir(load_conflist(conflist)), live)
    # Each pod comes back with the network config it was created with.
    restored = restore_pods(state_dir=state_dir, bin_dir=cni_bin_dir)
    failed = [entry for entry in restored if entry["status"] == "failed"]
    if failed:
        raise PodError("pods not restored: %s" % "; ".join(
            "%s: %s" % (entry["pod"], entry.get("error")) for entry in failed))
    lines = ["pod %s came back as %s (was %s)" % (entry["pod"], entry["ip"], entry["old_ip"])
             for entry in restored if entry["ip"] != entry["old_ip"]]
    return lines + ["%d test pods" % len(restored)]


def heal(state_dir=DEFAULT_STATE_DIR, conflist=None, cni_bin_dir=DEFAULT_CNI_BIN_DIR):
    """podnet-heal's step: bring back only the recorded pods that are broken now (netns
    gone, server killed), each with its recorded IP; the lines of what was done. Leases
    are left alone: a running node's leases are all live."""
    if not os.path.isdir(state_dir) or all(pod_health(s)[0] for s in read_states(state_dir).values()):
        return []
    restored = restore_pods(state_dir=state_dir, bin_dir=cni_bin_dir)
    return ["pod %s %s%s" % (entry["pod"], entry["status"],
                             ": %s" % entry["error"] if entry.get("error") else "")
            for entry in restored
            if entry["status"] != "running"]
