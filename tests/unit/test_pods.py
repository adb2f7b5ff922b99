"""Test pods: inventory expansion, spec hashing, lease cleanup and CNI chaining (with fake plugins)."""

import json
import os
import stat
import textwrap

import pytest
from ansible_collections.podnet.network.plugins.module_utils.pods import (
    cni_exec,
    errors,
    lifecycle,
    server,
)
from ansible_collections.podnet.network.plugins.module_utils.pods import (
    netns as pod_netns,
)
from ansible_collections.podnet.network.plugins.module_utils.pods import (
    state as pod_state,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.spec import (
    PodSpecError,
    check_concrete_pods,
    container_id,
    describe,
    expand_pods,
    netns_name,
    spec_hash,
)

NODES = ["node1", "node2", "node3"]


# --- expand_pods -----------------------------------------------------------------

def test_replicas_spread_round_robin_over_sorted_nodes():
    pods = expand_pods([{"name": "web", "labels": {"app": "web"}, "replicas": 4,
                         "ports": [{"containerPort": 8080}]}], NODES)
    assert [(p["name"], p["node"]) for p in pods] == [
        ("web-0", "node1"), ("web-1", "node2"), ("web-2", "node3"), ("web-3", "node1")]
    assert pods[0] == {"name": "web-0", "namespace": "default", "node": "node1", "labels": {"app": "web"},
                       "ports": [{"containerPort": 8080, "protocol": "TCP"}]}


def test_replicas_pinned_to_a_node_and_single_pods():
    pods = expand_pods([
        {"name": "db", "namespace": "data", "replicas": 2, "node": "node3"},
        {"name": "client", "node": "node2", "ports": [{"name": "dns", "containerPort": 53,
                                                       "protocol": "udp"}]},
    ], NODES)
    assert [(p["namespace"], p["name"], p["node"]) for p in pods] == [
        ("data", "db-0", "node3"), ("data", "db-1", "node3"), ("default", "client", "node2")]
    assert pods[2]["ports"] == [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]
    assert pods[2]["labels"] == {}


def test_replicas_do_not_share_mutable_fields():
    pods = expand_pods([{"name": "web", "replicas": 2, "labels": {"a": "b"},
                         "ports": [{"containerPort": 1}]}], NODES)
    pods[0]["labels"]["x"] = "y"
    pods[0]["ports"][0]["containerPort"] = 2
    assert pods[1]["labels"] == {"a": "b"} and pods[1]["ports"][0]["containerPort"] == 1


def test_zero_replicas_and_no_pods():
    assert expand_pods([{"name": "web", "replicas": 0}], NODES) == []
    assert expand_pods(None, NODES) == []
    assert expand_pods([], []) == []


@pytest.mark.parametrize("pods, message", [
    ([{"labels": {}}], "pods[0]: name is required"),
    ([{"name": "Web", "node": "node1"}], "pods[0] (Web): name 'Web' is not a DNS-1123 label"),
    ([{"name": "web_1", "node": "node1"}], "name 'web_1' is not a DNS-1123 label"),
    ([{"name": "a" * 64, "node": "node1"}], "is not a DNS-1123 label"),
    ([{"name": "a" * 62, "replicas": 10}], "replica name 'aaaa"),
    ([{"name": "web", "namespace": "Prod", "node": "node1"}], "pods[0] (web): namespace 'Prod'"),
    ([{"name": "web", "node": "node9"}], "pods[0] (web): node 'node9' is not one of the cluster's nodes"),
    ([{"name": "web"}], "pods[0] (web): node is required for a pod without replicas"),
    ([{"name": "web", "replicas": -1}], "pods[0] (web): replicas must be a non-negative integer"),
    ([{"name": "web", "replicas": True}], "replicas must be a non-negative integer"),
    ([{"name": "web", "replicas": 2}], None),
    ([{"name": "web", "node": "node1", "ports": [{"containerPort": 0}]}],
     "pods[0] (web): ports[0]: containerPort must be an integer 1-65535, got 0"),
    ([{"name": "web", "node": "node1", "ports": [{"containerPort": 65536}]}], "got 65536"),
    ([{"name": "web", "node": "node1", "ports": [{"containerPort": "http"}]}], "got 'http'"),
    ([{"name": "web", "node": "node1", "ports": [{"containerPort": True}]}], "got True"),
    ([{"name": "web", "node": "node1", "ports": [{}]}], "containerPort must be an integer"),
    ([{"name": "web", "node": "node1", "ports": [{"containerPort": 80, "protocol": "SCTP"}]}],
     "pods[0] (web): ports[0]: protocol must be one of TCP|UDP, got 'SCTP'"),
    ([{"name": "web", "node": "node1", "ports": [{"name": "http", "containerPort": 80},
                                                  {"name": "http", "containerPort": 81}]}],
     "pods[0] (web): ports[1]: duplicate port name 'http'"),
    ([{"name": "web", "node": "node1", "ports": [{"containerPort": 80}, {"containerPort": 80}]}],
     "ports[1]: duplicate port 80/TCP"),
    ([{"name": "web", "node": "node1", "ports": {"containerPort": 80}}], "ports must be a list"),
    ([{"name": "web", "node": "node1", "labels": {"app": 1}}],
     "pods[0] (web): labels must be a map of strings to strings"),
    ([{"name": "web", "node": "node1", "labels": ["app=web"]}], "labels must be a map"),
    ([{"name": "web", "node": "node1"}, {"name": "web", "node": "node2"}],
     "pods[1] (web): duplicate pod name 'web' in namespace 'default' (also from pods[0])"),
    ([{"name": "web", "replicas": 2}, {"name": "web-1", "node": "node2"}],
     "pods[1] (web-1): duplicate pod name 'web-1'"),
    ([{"name": "c", "namespace": "a-b", "node": "node1"}, {"name": "b-c", "namespace": "a", "node": "node1"}],
     "would share the netns name suffix 'a-b-c'"),
    (["web"], "pods[0]: a pod must be a map"),
])
def test_validation_names_pod_and_field(pods, message):
    if message is None:
        expand_pods(pods, NODES)
        return
    with pytest.raises(PodSpecError) as err:
        expand_pods(pods, NODES)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_same_name_in_two_namespaces_is_fine():
    pods = expand_pods([{"name": "web", "node": "node1"},
                        {"name": "web", "namespace": "prod", "node": "node1"}], NODES)
    assert {netns_name(p) for p in pods} == {"podnet-default-web", "podnet-prod-web"}


def test_check_concrete_pods_takes_expand_output_and_refuses_replicas():
    pods = expand_pods([{"name": "web", "replicas": 2, "labels": {"app": "web"}}], NODES)
    assert check_concrete_pods(pods) == pods
    with pytest.raises(PodSpecError, match=r"pods\[0\] \(web\): replicas is not allowed"):
        check_concrete_pods([{"name": "web", "replicas": 2}])


def test_names():
    pod = {"name": "web-0", "namespace": "prod"}
    assert container_id(pod) == "podnet-prod-web-0"
    assert netns_name(pod) == "podnet-prod-web-0"
    assert netns_name(pod, "podnet-hp-") == "podnet-hp-prod-web-0"
    assert describe({"name": "a", "namespace": "b", "labels": {"z": "1", "app": "x"}}, "10.0.0.2") \
        == "b/a 10.0.0.2 app=x,z=1"
    assert describe({"name": "a", "namespace": "b"}) == "b/a <none> -"


# --- spec hashing ---------------------------------------------------------------

BASE = {"name": "web-0", "namespace": "default", "labels": {"app": "web"},
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                  {"containerPort": 53, "protocol": "UDP"}]}


@pytest.mark.parametrize("change, same", [
    ({"labels": {"app": "api"}}, True),
    ({"ports": [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 8080}]}, True),
    ({"ports": [{"name": "web", "containerPort": 8080, "protocol": "UDP"}, {"containerPort": 53}]}, True),
    ({"ports": [{"containerPort": 8081}, {"containerPort": 53}]}, False),
    ({"ports": [{"containerPort": 8080}]}, False),
    ({"name": "web-1"}, False),
    ({"namespace": "prod"}, False),
])
def test_spec_hash_changes_only_with_what_the_running_pod_depends_on(change, same):
    assert (spec_hash(dict(BASE, **change), "net") == spec_hash(BASE, "net")) is same


def test_spec_hash_follows_the_network_config():
    assert spec_hash(BASE, "a") != spec_hash(BASE, "b")
    assert spec_hash(BASE, "a") == spec_hash(json.loads(json.dumps(BASE)), "a")
    conflist = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "bridge", "mtu": 1500}]}
    reordered = {"plugins": [{"mtu": 1500, "type": "bridge"}], "name": "podnet", "cniVersion": "1.0.0"}
    assert cni_exec.conflist_digest(conflist) == cni_exec.conflist_digest(reordered)


def test_listen_specs_answer_both_protocols_once_per_port():
    ports = [{"containerPort": 8080, "protocol": "UDP"}, {"containerPort": 8080}, {"containerPort": 53}]
    assert server.listen_specs(ports) == ["tcp:53", "udp:53", "tcp:8080", "udp:8080"]
    assert server.listen_specs([]) == []


# --- leases -----------------------------------------------------------------------

def test_clean_leases_removes_only_dead_containers_leases(tmp_path):
    data = tmp_path / "podnet"
    data.mkdir()
    (data / "10.244.1.2").write_bytes(b"podnet-default-web-0\r\neth0")
    (data / "10.244.1.3").write_bytes(b"podnet-default-gone\r\neth0")
    (data / "10.244.1.4").write_text("podnet-default-old")  # older host-local: ID only
    (data / "2001:db8::5").write_text("podnet-default-gone6\r\neth0")
    (data / "last_reserved_ip.0").write_text("10.244.1.4")
    (data / "lock").write_text("")
    (data / "notes.txt").write_text("podnet-default-gone")
    removed = cni_exec.clean_leases(str(data), ["podnet-default-web-0"])
    assert removed == ["10.244.1.3", "10.244.1.4", "2001:db8::5"]
    assert sorted(os.listdir(data)) == ["10.244.1.2", "last_reserved_ip.0", "lock", "notes.txt"]
    assert cni_exec.clean_leases(str(data), ["podnet-default-web-0"]) == []


def test_clean_leases_keeps_another_runtimes_leases(tmp_path):
    # containerd or podman using podnet's conflist: a 64-hex container ID, live or not,
    # is not podnet's to release (its address would be handed out twice).
    data = tmp_path / "podnet"
    data.mkdir()
    foreign = "5f2c" * 16
    (data / "10.244.1.7").write_bytes(foreign.encode() + b"\r\neth0")
    (data / "10.244.1.8").write_bytes(b"\r\neth0")  # unreadable owner: not provably podnet's
    (data / "10.244.1.9").write_bytes(b"podnet-default-gone\r\neth0")
    assert cni_exec.clean_leases(str(data), []) == ["10.244.1.9"]
    assert sorted(os.listdir(data)) == ["10.244.1.7", "10.244.1.8", "lock"]


def test_a_test_pods_container_id_carries_the_prefix_the_cleanup_owns():
    from ansible_collections.podnet.network.plugins.module_utils.pods import spec
    assert spec.container_id({"namespace": "x", "name": "a"}).startswith(cni_exec.PODNET_CONTAINER_PREFIX)


def test_clean_leases_without_data_dir(tmp_path):
    assert cni_exec.clean_leases(str(tmp_path / "missing"), []) == []


def test_lease_data_dir_is_data_dir_plus_network_name():
    conflist = {"name": "podnet", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]}
    assert cni_exec.lease_data_dir(conflist) == "/var/lib/cni/networks/podnet"
    conflist["plugins"][0]["ipam"]["dataDir"] = "/tmp/x"
    assert cni_exec.lease_data_dir(conflist) == "/tmp/x/podnet"
    assert cni_exec.lease_data_dir(
        {"name": "n", "plugins": [{"type": "ptp", "ipam": {"type": "dhcp"}}]}) is None


# --- state ------------------------------------------------------------------------

def test_state_round_trip_and_removal(tmp_path):
    state = {"name": "web-0", "namespace": "default", "labels": {}, "ports": [],
             "netns": "podnet-default-web-0", "container_id": "podnet-default-web-0",
             "ip": "10.244.1.2", "pid": None, "spec_hash": "x"}
    path = pod_state.write_state(str(tmp_path / "pods"), state)
    assert path.endswith("/default_web-0.json")
    assert pod_state.read_states(str(tmp_path / "pods")) == {"default/web-0": state}
    pod_state.remove_state(str(tmp_path / "pods"), state)
    assert pod_state.read_states(str(tmp_path / "pods")) == {}
    assert pod_state.read_states(str(tmp_path / "absent")) == {}


def test_unreadable_state_names_the_file(tmp_path):
    (tmp_path / "default_x.json").write_text("{")
    with pytest.raises(errors.PodError, match="default_x.json"):
        pod_state.read_states(str(tmp_path))


def test_health_of_a_pod_without_ip_or_netns(tmp_path, monkeypatch):
    # An empty netns directory of the test's own: the host's /run/netns is never read.
    monkeypatch.setattr(pod_netns, "NETNS_RUN_DIR", str(tmp_path))
    assert lifecycle.pod_health({"name": "a", "netns": "x", "ip": None}) == (False, "no IP recorded")
    healthy, reason = lifecycle.pod_health(
        {"name": "a", "netns": "podnet-unit-test-absent", "ip": "10.0.0.2"})
    assert not healthy and "missing" in reason


def test_server_alive_refuses_foreign_pids():
    assert not server.server_alive(None, "/x/echo.py")
    assert not server.server_alive(os.getpid(), "/x/echo.py")  # a live PID that is not the echo server
    assert server.stop_server(os.getpid(), "/x/echo.py") is False


# --- conflist chaining with fake plugins --------------------------------------------

FAKE_PLUGIN = textwrap.dedent("""\
    #!/usr/bin/python3
    import json, os, sys
    conf = json.load(sys.stdin)
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
    with open(os.environ["FAKE_CNI_LOG"], "a") as log:
        log.write(json.dumps({"plugin": os.path.basename(sys.argv[0]), "env": env, "conf": conf}) + "\\n")
    if conf.get("fail") == env["CNI_COMMAND"]:
        print(json.dumps({"cniVersion": conf["cniVersion"], "code": 11, "msg": "no luck",
                          "details": "asked to fail"}))
        sys.exit(1)
    if env["CNI_COMMAND"] == "ADD":
        result = conf.get("prevResult") or {"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}
        result.setdefault("seen", []).append(conf["type"])
        if conf.get("ip"):
            result["interfaces"] = [{"name": "cbr0"}, {"name": "eth0", "sandbox": env["CNI_NETNS"]}]
            result["ips"] = [{"address": "fd00::5/64", "interface": 1},
                             {"address": "10.0.0.9/24", "interface": 0},
                             {"address": conf["ip"], "interface": 1}]
        print(json.dumps(result))
    """)


@pytest.fixture
def fake_cni(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("fake-a", "fake-b", "fake-c", "loopback"):
        path = bin_dir / name
        path.write_text(FAKE_PLUGIN)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CNI_LOG", str(log))
    monkeypatch.setenv("CNI_ARGS", "leaked=1")  # a runtime's own env must not reach the plugins

    def calls():
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return str(bin_dir), calls


def conflist(*plugins):
    return {"cniVersion": "1.0.0", "name": "podnet", "plugins": list(plugins)}


def test_add_chains_prev_result_and_injects_name_and_version(fake_cni):
    bin_dir, calls = fake_cni
    net = conflist({"type": "fake-a", "ip": "10.244.1.7/24"},
                   {"type": "fake-b", "capabilities": {"portMappings": True}}, {"type": "fake-c"})
    result = cni_exec.cni_add(net, "podnet-default-web-0", "/run/netns/p", bin_dir, ip="10.244.1.7",
                         runtime_config={"portMappings": [], "bandwidth": {}})
    assert result["seen"] == ["fake-a", "fake-b", "fake-c"]
    assert cni_exec.result_ip(result) == "10.244.1.7"
    log = calls()
    assert [c["plugin"] for c in log] == ["fake-a", "fake-b", "fake-c"]
    assert all(c["conf"]["name"] == "podnet" and c["conf"]["cniVersion"] == "1.0.0" for c in log)
    assert "prevResult" not in log[0]["conf"]
    assert log[1]["conf"]["prevResult"]["seen"] == ["fake-a"]
    assert log[2]["conf"]["prevResult"]["seen"] == ["fake-a", "fake-b"]
    assert log[1]["conf"]["runtimeConfig"] == {"portMappings": []}
    assert "runtimeConfig" not in log[0]["conf"] and "runtimeConfig" not in log[2]["conf"]
    assert log[0]["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "podnet-default-web-0",
                             "CNI_NETNS": "/run/netns/p", "CNI_IFNAME": "eth0", "CNI_PATH": bin_dir,
                             "CNI_ARGS": "IgnoreUnknown=1;IP=10.244.1.7"}


def test_del_runs_in_reverse_with_cached_result(fake_cni, tmp_path):
    bin_dir, calls = fake_cni
    netns = tmp_path / "netns"
    netns.write_text("")
    net = conflist({"type": "fake-a"}, {"type": "fake-b"}, {"type": "fake-c"})
    cni_exec.cni_del(net, "cid", str(netns), bin_dir, prev_result={"cniVersion": "1.0.0", "ips": []})
    log = calls()
    assert [c["plugin"] for c in log] == ["fake-c", "fake-b", "fake-a"]
    assert all(c["env"]["CNI_COMMAND"] == "DEL" and c["env"]["CNI_NETNS"] == str(netns) for c in log)
    assert all(c["conf"]["prevResult"] == {"cniVersion": "1.0.0", "ips": []} for c in log)
    assert all("CNI_ARGS" not in c["env"] for c in log)


def test_del_of_a_gone_netns_passes_it_empty(fake_cni, tmp_path):
    bin_dir, calls = fake_cni
    cni_exec.cni_del(conflist({"type": "fake-a"}), "cid", str(tmp_path / "gone-netns"), bin_dir)
    assert calls()[0]["env"]["CNI_NETNS"] == ""


def test_failed_add_reports_plugin_error_and_rolls_back(fake_cni):
    bin_dir, calls = fake_cni
    net = conflist({"type": "fake-a"}, {"type": "fake-b", "fail": "ADD"}, {"type": "fake-c"})
    with pytest.raises(errors.CNIError) as err:
        cni_exec.cni_add(net, "cid", "", bin_dir)
    assert err.value.plugin == "fake-b" and err.value.code == 11
    assert str(err.value) == "CNI ADD fake-b for cid failed (code 11): no luck (asked to fail)"
    assert [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in calls()] == [
        ("fake-a", "ADD"), ("fake-b", "ADD"), ("fake-c", "DEL"), ("fake-b", "DEL"), ("fake-a", "DEL")]


def test_failed_del_still_dels_the_rest(fake_cni):
    bin_dir, calls = fake_cni
    net = conflist({"type": "fake-a"}, {"type": "fake-b", "fail": "DEL"}, {"type": "fake-c"})
    with pytest.raises(errors.CNIError, match="fake-b"):
        cni_exec.cni_del(net, "cid", "", bin_dir)
    assert [c["plugin"] for c in calls()] == ["fake-c", "fake-b", "fake-a"]


def test_loopback_uses_lo(fake_cni):
    bin_dir, calls = fake_cni
    cni_exec.loopback_add("cid", "/run/netns/p", bin_dir)
    entry = calls()[0]
    assert entry["env"]["CNI_IFNAME"] == "lo"
    assert entry["conf"] == {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


def test_missing_plugin_names_the_path(fake_cni):
    bin_dir, _ = fake_cni
    with pytest.raises(errors.CNIError, match="no executable 'bridge' in CNI_PATH"):
        cni_exec.cni_add(conflist({"type": "bridge"}), "cid", "", bin_dir)


@pytest.mark.parametrize("result, ip", [
    ({"ips": [{"address": "10.1.0.2/24"}]}, "10.1.0.2"),
    ({"ips": [{"address": "fd00::2/64"}]}, None),
    ({"ip4": {"ip": "10.1.0.3/24"}}, "10.1.0.3"),
    ({}, None),
    (None, None),
])
def test_result_ip(result, ip):
    assert cni_exec.result_ip(result) == ip


def test_load_conflist_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.conflist"
    bad.write_text("{nope")
    with pytest.raises(errors.PodError, match="bad.conflist is not valid JSON"):
        cni_exec.load_conflist(str(bad))
    bad.write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{}]}))
    with pytest.raises(errors.PodError, match=r"plugins\[0\] needs a type"):
        cni_exec.load_conflist(str(bad))
    with pytest.raises(errors.PodError, match="cannot read CNI conflist"):
        cni_exec.load_conflist(str(tmp_path / "absent"))
