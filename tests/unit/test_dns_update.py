"""The DNS blue/green update as a table (dns/update.py): what the node holds -> the steps.

Each row starts from a node that serves the model on port 10053 (as a run leaves it) and
changes one thing; the expected column is what the module reports, in order, and which
port serves afterwards. The order of the steps is the contract that keeps port 53
answering: start and wait before the swap, drain before the stop.
"""

import copy
import json

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    conf_path,
    render_instance,
    render_table,
    settings_from,
)
from ansible_collections.podnet.network.plugins.module_utils.dns.update import (
    CHECKED,
    STATE_FILE,
    plan_address,
    plan_dns_removal,
    plan_dns_update,
)

P = pytest.param
CONF_DIR = "/etc/podnet/dns"
TABLE = "podnet-dns"
TABLE_PATH = "/etc/podnet/nftables/podnet-dns.nft"
DNS_IP = "10.96.0.10"
STATE_PATH = f"{CONF_DIR}/{STATE_FILE}"
LABEL = "lo:podnet"


def model(cluster_ip, *ips):
    endpoints = [{"ip": ip, "port": 8080, "node": "node1", "pod": None} for ip in ips]
    return {"cluster_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12", "services": [
        {"namespace": "default", "name": "web", "type": "ClusterIP", "cluster_ip": cluster_ip,
         "external_name": None, "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": 8080,
                                           "node_port": None, "endpoints": endpoints}]},
    ]}


MODEL = model("10.96.0.20", "10.244.1.5")
SETTINGS = settings_from(MODEL, "cluster.local", DNS_IP, 5)


def desired(served=MODEL):
    return {"model": served, "settings": SETTINGS, "ports": (10053, 10054), "upstreams": ["192.168.56.1"],
            "conf_dir": CONF_DIR, "table": TABLE, "table_path": TABLE_PATH, "dnsmasq": "/usr/sbin/dnsmasq",
            "drain_seconds": 1.0}


def confs(port):
    return [conf_path(CONF_DIR, port, "auth"), conf_path(CONF_DIR, port, "front")]


def serving(port=10053, served=MODEL):
    """The node as a successful run on `port` leaves it."""
    instance = render_instance(served, SETTINGS, port, ["192.168.56.1"])
    state = {"port": port, "dns_ip": DNS_IP, "label": LABEL, "dnsmasq": "/usr/sbin/dnsmasq",
             "confs": confs(port), "zone": instance["zone"]}
    content = render_table(TABLE, DNS_IP, port)
    return {
        "state": state,
        "addresses": [("127.0.0.1", 8, "lo"), (DNS_IP, 32, LABEL)],
        "running": set(confs(port)),
        "answering": True,
        "files": {confs(port)[0]: instance["auth"], confs(port)[1]: instance["front"],
                  STATE_PATH: json.dumps(state)},
        "table": content,
        "table_file": build_script("ip", TABLE, content),
    }


def changed(**changes):
    live = copy.deepcopy(serving())
    live.update(changes)
    return live


NOTHING = {"state": {}, "addresses": [("127.0.0.1", 8, "lo")], "running": set(), "answering": False,
           "files": {}, "table": None, "table_file": None}
START_10054 = "start instance on port 10054"
SWAP_10054 = f"load table ip {TABLE}: port 53 of {DNS_IP} to port 10054"
STOP_10053 = f"stop {', '.join(confs(10053))}"
REMOVE_10053 = [f"remove {path}" for path in confs(10053)]
NEW_MODEL = model("10.96.0.21", "10.244.1.5")  # web's A record changes

# Columns: live, served model -> the actions reported, in order; the serving port.
ROWS = [
    P(NOTHING, MODEL, [f"add {DNS_IP}/32 to lo as {LABEL}",
                       "start instance on port 10053 (no instance yet)",
                       f"load table ip {TABLE}: port 53 of {DNS_IP} to port 10053", f"write {TABLE_PATH}"],
      10053, id="first run"),
    P(serving(), MODEL, [], 10053, id="converged: nothing to do"),
    P(serving(), NEW_MODEL, [f"{START_10054} (records or settings changed)", SWAP_10054,
                             f"write {TABLE_PATH}", STOP_10053, *REMOVE_10053],
      10054, id="records changed: blue/green"),
    P(serving(10054), NEW_MODEL, ["start instance on port 10053 (records or settings changed)",
                                  f"load table ip {TABLE}: port 53 of {DNS_IP} to port 10053",
                                  f"write {TABLE_PATH}", f"stop {', '.join(confs(10054))}",
                                  *[f"remove {path}" for path in confs(10054)]],
      10053, id="and back to the first port"),
    P(changed(running=set()), MODEL, [f"{START_10054} (the instance is not answering)", SWAP_10054,
                                      f"write {TABLE_PATH}", *REMOVE_10053],
      10054, id="active instance dead: nothing to drain or stop"),
    P(changed(answering=False), MODEL, [f"{START_10054} (the instance is not answering)", SWAP_10054,
                                        f"write {TABLE_PATH}", STOP_10053, *REMOVE_10053],
      10054, id="active instance hangs: replaced, then stopped"),
    P(changed(addresses=[]), MODEL, [f"add {DNS_IP}/32 to lo as {LABEL}",
                                     f"{START_10054} (the address was missing)", SWAP_10054,
                                     f"write {TABLE_PATH}", STOP_10053, *REMOVE_10053],
      10054, id="address missing"),
    P(changed(table="table ip podnet-dns {\n}\n"), MODEL,
      [f"load table ip {TABLE}: port 53 of {DNS_IP} to port 10053"], 10053, id="table edited by hand"),
    P(changed(table=None), MODEL, [f"load table ip {TABLE}: port 53 of {DNS_IP} to port 10053"], 10053,
      id="table deleted by hand"),
    P(changed(table_file=None), MODEL, [f"write {TABLE_PATH}"], 10053, id="boot script missing"),
    P(changed(running=set(confs(10053)) | set(confs(10054)),
              files={**serving()["files"], **dict.fromkeys(confs(10054), "x")}), MODEL,
      [f"stop {', '.join(confs(10054))}", *[f"remove {path}" for path in confs(10054)]],
      10053, id="a crashed update's leftovers"),
    P(changed(state={}), MODEL, ["start instance on port 10053 (no instance yet)"], 10053,
      id="record lost: the first port is started again, its old processes stopped first"),
]


def actions(plan):
    return [s["action"] for s in plan["steps"] if s["action"]]


@pytest.mark.parametrize(("live", "served", "expected", "port"), ROWS)
def test_plan_dns_update(live, served, expected, port):
    plan = plan_dns_update(live, desired(served))
    assert actions(plan) == expected
    assert plan["port"] == port


def kinds(plan):
    return [s["do"] for s in plan["steps"]]


def test_blue_green_order_keeps_port_53_answering():
    plan = plan_dns_update(serving(), desired(NEW_MODEL))
    assert kinds(plan) == ["test_conf", "test_conf", "stop", "write", "write", "start", "load_table", "write",
                           "write", "drain", "stop", "remove", "remove"]
    steps = plan["steps"]
    start = next(s for s in steps if s["do"] == "start")
    assert start["keeps_serving"] == 10053 and start["confs"] == confs(10054)
    # Leftovers on the new port are stopped before its files are written.
    assert steps[2] == {"do": "stop", "action": None, "confs": confs(10054)}
    assert next(s for s in steps if s["do"] == "drain") == {
        "do": "drain", "action": None, "dns_ip": DNS_IP, "port": 10053, "seconds": 1.0}
    state = json.loads(next(s for s in steps if s["do"] == "write" and s["path"] == STATE_PATH)["text"])
    assert state["port"] == 10054 and state["confs"] == confs(10054)
    assert plan["old_zone"] == serving()["state"]["zone"] and plan["zone"] != plan["old_zone"]


def test_first_run_has_nobody_to_keep_serving():
    start = next(s for s in plan_dns_update(NOTHING, desired())["steps"] if s["do"] == "start")
    assert start["keeps_serving"] is None


def test_a_converged_node_has_no_steps_at_all():
    plan = plan_dns_update(serving(), desired())
    assert plan["steps"] == [] and plan["zone"] == plan["old_zone"]


def test_a_new_dns_ip_starts_over_and_removes_only_podnets_old_address():
    live = changed(addresses=[("127.0.0.1", 8, "lo"), ("10.96.0.99", 32, LABEL), ("10.96.0.98", 32, "lo")])
    live["state"]["dns_ip"] = "10.96.0.99"
    assert actions(plan_dns_update(live, desired()))[:3] == [
        f"add {DNS_IP}/32 to lo as {LABEL}", f"remove 10.96.0.99/32 ({LABEL}) from lo",
        "start instance on port 10053 (no instance yet)"]


@pytest.mark.parametrize(("addresses", "expected"), [
    P([], ["add_address"], id="none"),
    P([(DNS_IP, 32, LABEL)], [], id="present"),
    P([(DNS_IP, 32, "lo")], [], id="present, put there by someone else: kept"),
    P([(DNS_IP, 32, LABEL), ("10.96.0.9", 32, LABEL)], ["remove_address"], id="an old one of ours"),
    P([("10.96.0.9", 32, "lo:other")], ["add_address"], id="someone else's is never removed"),
])
def test_plan_address(addresses, expected):
    assert [s["do"] for s in plan_address(addresses, DNS_IP)] == expected


def test_check_mode_runs_only_the_checks():
    # dnsmasq --test and nft -c; a delete only looks. Nothing that changes the node.
    assert CHECKED == {"test_conf", "load_table", "delete_table"}


@pytest.mark.parametrize(("live", "expected"), [
    P(serving(), [f"delete table ip {TABLE}", STOP_10053, f"remove {DNS_IP}/32 ({LABEL}) from lo",
                  *REMOVE_10053, f"remove {STATE_PATH}", f"remove {TABLE_PATH}"], id="serving"),
    P(NOTHING, [], id="nothing there"),
    P(changed(table=None, running=set(), table_file=None, addresses=[]),
      [*REMOVE_10053, f"remove {STATE_PATH}"], id="only files left"),
])
def test_plan_dns_removal(live, expected):
    plan = plan_dns_removal(live, CONF_DIR, TABLE, TABLE_PATH)
    assert actions(plan) == expected
    assert plan["zone"] == [] and plan["port"] is None
