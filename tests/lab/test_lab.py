"""The lab itself: namespaces as nodes, each with its own files, and the root
namespace left exactly as it was.

Builds the lab if it is not up and destroys it at the end only if this session
built it; the destructive tests (reboot, destroy) are skipped on a lab that
existed before the session, so running them never disturbs someone's lab.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lab import podnet_lab, rootns
from tests.lab.netns_backend import get_lab_host

REPO = Path(__file__).resolve().parents[2]
LAB = [sys.executable, str(REPO / "lab" / "podnet_lab.py")]
TOPO = podnet_lab.load_topology()
NODES = list(TOPO.nodes)


def lab_cli(*args, timeout=120):
    return subprocess.run(LAB + list(args), capture_output=True, text=True, timeout=timeout)


def lab_present():
    return any(podnet_lab.ns_id(podnet_lab.netns_path(ns)) for ns in TOPO.namespaces())


def root_snapshot():
    return rootns.snapshot()


@pytest.fixture(scope="session")
def lab():
    existed = lab_present()
    before = None if existed else root_snapshot()
    proc = lab_cli("create")
    assert proc.returncode == 0, proc.stderr
    yield {"existed": existed, "root_before": before}
    if not existed and lab_present():
        lab_cli("destroy")


@pytest.fixture
def own_lab(lab):
    if lab["existed"]:
        pytest.skip("the lab existed before this session: not rebooting or destroying it")
    return lab


def netns_inode(ns):
    return os.stat(podnet_lab.netns_path(ns)).st_ino


def test_create_again_is_a_fast_no_op(lab):
    inodes = [netns_inode(ns) for ns in TOPO.namespaces()]
    start = time.monotonic()
    proc = lab_cli("create")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "already up" in proc.stdout
    assert elapsed < 1.5
    assert [netns_inode(ns) for ns in TOPO.namespaces()] == inodes


def test_nodes_boot_without_forwarding(lab):
    for node in NODES:
        host = get_lab_host(node)
        assert host.sysctl("net.ipv4.ip_forward") == 0, node
        assert host.sysctl("net.bridge.bridge-nf-call-iptables") == 0, node
    assert get_lab_host("router").sysctl("net.ipv4.ip_forward") == 1


def test_node_sees_only_its_own_interfaces(lab):
    for node in NODES:
        host = get_lab_host(node)
        assert sorted(host.check_output("ls /sys/class/net").split()) == ["eth0", "lo"]
        assert host.interface("eth0").addresses[0] == TOPO.nodes[node]
        assert f"default via {TOPO.router_ip} dev eth0" in host.check_output("ip route")


def test_node_files_are_private(lab):
    name = f"lab-test-{uuid.uuid4().hex[:8]}"
    node1, node2 = get_lab_host(NODES[0]), get_lab_host(NODES[1])
    node1.run_test("echo hello > /etc/podnet/%s", name)
    try:
        assert node1.file(f"/etc/podnet/{name}").content_string == "hello\n"
        assert not node2.file(f"/etc/podnet/{name}").exists
        assert not Path("/etc/podnet", name).exists()
    finally:
        node1.run("rm -f /etc/podnet/%s", name)


def test_pod_namespaces_stay_inside_their_node(lab):
    name = f"lab-test-{uuid.uuid4().hex[:8]}"
    node1, node2 = get_lab_host(NODES[0]), get_lab_host(NODES[1])
    node1.run_test("ip netns add %s", name)
    try:
        assert name in node1.check_output("ip netns list")
        assert name not in node2.check_output("ip netns list")
        host_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name not in host_list
    finally:
        node1.run("ip netns del %s", name)


def test_client_reaches_the_internet_without_nat(lab):
    out = get_lab_host("client").check_output(f"curl -sS --max-time 3 http://{TOPO.internet_ip}/")
    answer = json.loads(out)
    assert answer["pod"] == "internet"
    assert answer["client"] == TOPO.client_ip


def test_router_knows_no_pod_network(lab):
    assert get_lab_host("router").run("ip route get 10.244.1.5").rc != 0


def test_nodes_reach_each_other(lab):
    for node in NODES:
        host = get_lab_host(node)
        for other, ip in TOPO.nodes.items():
            if other != node:
                host.run_test("ping -c1 -W1 %s", ip)


def test_exec_passes_the_exit_code_through(lab):
    assert lab_cli("exec", NODES[0], "--", "sh", "-c", "exit 7").returncode == 7
    proc = lab_cli("exec", "internet", "--", "ip", "-4", "-br", "addr", "show", "eth0")
    assert TOPO.internet_ip in proc.stdout


def test_ansible_reaches_each_node_through_the_netns_connection(lab):
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible"), "-i", str(podnet_lab.DEFAULT_INVENTORY),
                           "nodes", "-o", "-m", "ansible.builtin.command", "-a", "ip -4 -br addr show eth0"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split(" | ")[0]: line for line in proc.stdout.splitlines() if " | " in line}
    for node, ip in TOPO.nodes.items():
        assert ip in lines[node]


def test_reboot_wipes_runtime_state_and_keeps_the_disk(own_lab):
    node = NODES[-1]
    host = get_lab_host(node)
    host.run_test("echo kept > /etc/podnet/lab-test-marker")
    host.run_test("sysctl -qw net.ipv4.ip_forward=1")
    host.run_test("ip netns add lab-test-pod")
    host.run_test("setsid ip netns exec lab-test-pod sleep 300 </dev/null >/dev/null 2>&1 &")
    old = netns_inode(TOPO.ns(node))
    start = time.monotonic()
    proc = lab_cli("reboot", node)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "absent" in proc.stdout
    assert elapsed < 5
    assert netns_inode(TOPO.ns(node)) != old
    assert host.sysctl("net.ipv4.ip_forward") == 0
    assert host.file("/etc/podnet/lab-test-marker").content_string == "kept\n"
    assert "lab-test-pod" not in host.check_output("ip netns list")
    assert "sleep 300" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert host.interface("eth0").addresses[0] == TOPO.nodes[node]
    host.run_test("ping -c1 -W1 %s", TOPO.nodes[NODES[0]])
    host.run("rm -f /etc/podnet/lab-test-marker")


def test_reboot_runs_the_restore_entry_point(own_lab):
    node = NODES[-1]
    host = get_lab_host(node)
    script = podnet_lab.RESTORE_ENTRY_POINT
    host.run_test("printf '#!/bin/sh\\necho restoring; ip netns list; exit ${1:-0}\\n' > %s; chmod +x %s",
                  script, script)
    try:
        host.run_test("ip netns add lab-test-pod")
        proc = lab_cli("reboot", node)
        assert proc.returncode == 0, proc.stderr
        assert "restoring" in proc.stdout
        assert "lab-test-pod" not in proc.stdout  # the restore sees a fresh /run
        host.run_test("printf '#!/bin/sh\\necho broken; exit 3\\n' > %s", script)
        proc = lab_cli("reboot", node)
        assert proc.returncode != 0
        assert "broken" in proc.stdout
    finally:
        host.run("rm -f %s", script)


def test_destroy_leaves_the_root_namespace_as_it_was(own_lab):
    proc = lab_cli("destroy")
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not set(TOPO.namespaces()) & set(listed)
    assert not TOPO.run_dir.exists()
    assert not TOPO.state_dir.exists()
    assert root_snapshot() == own_lab["root_before"]
    assert lab_cli("destroy").returncode == 0
