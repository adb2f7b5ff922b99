"""The proxy modules' decisions against the live kernel (services/sync.py), as tables.

nftables: when proxy_nftables sends element deltas and when it loads the table whole.
iptables: which chains proxy_iptables rewrites because their live rule count drifted.
"""

import copy

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import sha256
from ansible_collections.podnet.network.plugins.module_utils.services.nft import render_nftables, shape
from ansible_collections.podnet.network.plugins.module_utils.services.sync import (
    generation,
    inputs_digest,
    iptables_drift,
    kernel_matches,
    parse_iptables_save,
    plan_nft_update,
    trusted_live,
    update_summary,
)

P = pytest.param
NODE = "node1"


def endpoint(ip, port=8080):
    return {"ip": ip, "port": port, "node": f"node{ip.split('.')[2]}", "pod": f"default/pod-{ip}"}


def service(name, cluster_ip, endpoints, affinity=None, protocol="TCP"):
    return {
        "namespace": "default", "name": name, "type": "ClusterIP", "cluster_ip": cluster_ip,
        "external_ips": [], "external_traffic_policy": "Cluster", "internal_traffic_policy": "Cluster",
        "session_affinity_timeout": affinity,
        "ports": [{"name": "", "protocol": protocol, "port": 80, "node_port": None, "target_port": 8080,
                   "endpoints": endpoints}],
    }


def model(web=("10.244.1.5", "10.244.2.5"), sticky=None, cidr="10.244.0.0/16"):
    services = [service("web", "10.96.0.20", [endpoint(ip) for ip in web])]
    if sticky:
        services.append(service("sticky", "10.96.0.21", [endpoint(ip) for ip in sticky], affinity=10800))
    return {"cluster_cidr": cidr, "service_cidr": "10.96.0.0/12", "node_port_range": [30000, 32767],
            "services": services}


def ruleset(**kwargs):
    return render_nftables(model(**kwargs), NODE)


def live_of(rules, affinity=()):
    """The table as parse_listing reads it, had nft loaded `rules` (and clients pinned)."""
    elements = {name: set(values) for name, values in rules["elements"].items()}
    elements["affinity"] = set(affinity)
    return {"elements": elements, "chains": dict(shape(rules)["chains"])}


def record_of(rules):
    return {"skeleton_sha256": sha256(rules["skeleton"]), "chains": shape(rules)["chains"],
            "elements": rules["elements"]}


OLD = ruleset()
PIN = "10.244.1.3 . 10.96.0.21 . tcp . 80 : 10.244.1.12 . 8080"


def edited(live, chain="services"):
    live = copy.deepcopy(live)
    live["chains"][chain] += 1
    return live


# Columns: wanted ruleset, live table (None: missing), record, verify_live ->
# reload reason (None: an update), forget_affinity, affinity_from_live, fallback.
ROWS = [
    P(OLD, None, None, True, "it does not exist", False, False, False, id="first load"),
    P(OLD, live_of(OLD), record_of(OLD), True, None, False, True, False, id="nothing changed"),
    P(ruleset(web=("10.244.1.5",)), live_of(OLD), record_of(OLD), True, None, True, True, False,
      id="an endpoint left: update, forget its pins"),
    P(OLD, edited(live_of(OLD)), record_of(OLD), True, "its chains or rules differ from podnet's",
      False, False, False, id="hand-changed table"),
    P(ruleset(web=[f"10.244.1.{i}" for i in range(1, 20)]), live_of(OLD), record_of(OLD), True,
      "a new endpoint count needs pick chains service_pick_19", False, False, False, id="new pick chain"),
    P(ruleset(cidr="10.240.0.0/12"), live_of(OLD), record_of(OLD), True,
      "its skeleton changed (cluster CIDR or affinity timeouts)", False, False, False, id="new cluster CIDR"),
    P(OLD, live_of(OLD), None, True, None, False, True, False, id="no record: the listing decides"),
    P(ruleset(sticky=("10.244.1.12",)), live_of(ruleset(sticky=("10.244.1.12",)), [PIN]),
      record_of(ruleset(sticky=("10.244.1.12",))), True, None, True, True, False,
      id="pins in the listing are checked"),
    P(ruleset(web=("10.244.1.5",)), trusted_live(record_of(OLD), False), record_of(OLD), False, None, True,
      False, True, id="trusted record: an update; pins are listed, a refused update reloads"),
    P(OLD, trusted_live(record_of(OLD), False), record_of(OLD), False, None, False, False, True,
      id="trusted record, nothing changed"),
    P(ruleset(sticky=("10.244.1.12",)), trusted_live(record_of(ruleset(sticky=("10.244.1.12",))), False),
      record_of(ruleset(sticky=("10.244.1.12",))), False, None, False, False, True,
      id="trusted record with session affinity, nothing changed"),
]


@pytest.mark.parametrize(
    ("wanted", "live", "record", "verify_live", "reload", "forget", "from_live", "fallback"), ROWS)
def test_plan_nft_update(wanted, live, record, verify_live, reload, forget, from_live, fallback):
    plan = plan_nft_update(wanted, live, record, verify_live)
    assert plan["reload"] == reload
    assert (plan["diff"] is None) == bool(reload)
    got = (plan["forget_affinity"], plan["affinity_from_live"], plan["fallback"])
    assert got == (forget, from_live, fallback)


@pytest.mark.parametrize(("record", "verify_live", "trusted"), [
    P(None, True, False, id="no record, verify"),
    P(None, False, False, id="no record: list the kernel"),
    P({"elements": {}, "chains": {}}, True, False, id="verify_live lists the kernel"),
    P({"elements": {}, "chains": {}}, False, True, id="record trusted"),
])
def test_trusted_live(record, verify_live, trusted):
    assert (trusted_live(record, verify_live) is not None) == trusted


DIGEST = inputs_digest(sha256('{"services": []}'), "node1", "podnet-services", "/etc/podnet/s.nft", "r1")
GLANCED = {"inputs": DIGEST, "chains": {"services": 10, "nat_output": 1}}


@pytest.mark.parametrize(("record", "live_generation", "live_chains", "matches"), [
    P(GLANCED, {str(generation(DIGEST))}, {"services", "nat_output"}, True, id="the recorded table"),
    P(None, {str(generation(DIGEST))}, {"services", "nat_output"}, False, id="no record"),
    P(dict(GLANCED, inputs=None), {str(generation(DIGEST))}, {"services", "nat_output"}, False,
      id="a record of an older podnet (no inputs)"),
    P(GLANCED, None, set(), False, id="table gone (ruleset flushed)"),
    P(GLANCED, set(), {"services", "nat_output"}, False, id="generation set empty"),
    P(GLANCED, {str(generation(DIGEST) ^ 1)}, {"services", "nat_output"}, False, id="another generation"),
    P(GLANCED, {str(generation(DIGEST)), "7"}, {"services", "nat_output"}, False, id="two generations"),
    P(GLANCED, {str(generation(DIGEST))}, {"services"}, False, id="a chain deleted"),
    P(GLANCED, {str(generation(DIGEST))}, {"services", "nat_output", "mine"}, False, id="a chain added"),
])
def test_kernel_matches(record, live_generation, live_chains, matches):
    assert kernel_matches(record, live_generation, live_chains) is matches


@pytest.mark.parametrize(("record", "live_rules", "matches"), [
    P(GLANCED, {"services": 10, "nat_output": 1}, True, id="as many rules as recorded"),
    P(GLANCED, None, True, id="rule counts unknown: names only"),
    P(GLANCED, {}, False, id="flush table: every chain empty"),
    P(GLANCED, {"services": 10}, False, id="one chain flushed"),
    P(GLANCED, {"services": 11, "nat_output": 1}, False, id="a rule added"),
    P(dict(GLANCED, chains=["services", "nat_output"]), {"services": 10, "nat_output": 1}, False,
      id="a record of names only: loaded once more"),
    P(dict(GLANCED, chains=["services", "nat_output"]), None, True, id="names only, counts unknown"),
])
def test_kernel_matches_counts_rules(record, live_rules, matches):
    """`nft flush table` keeps the generation set and every chain: only the rule counts show it."""
    live_generation = {str(generation(DIGEST))}
    assert kernel_matches(record, live_generation, {"services", "nat_output"}, live_rules) is matches


@pytest.mark.parametrize("other", [
    (sha256('{"services": [1]}'), "node1", "podnet-services", "/etc/podnet/s.nft", "r1"),
    (sha256('{"services": []}'), "node2", "podnet-services", "/etc/podnet/s.nft", "r1"),
    (sha256('{"services": []}'), "node1", "other", "/etc/podnet/s.nft", "r1"),
    (sha256('{"services": []}'), "node1", "podnet-services", None, "r1"),
    (sha256('{"services": []}'), "node1", "podnet-services", "/etc/podnet/s.nft", "r2"),
])
def test_every_input_moves_the_digest(other):
    assert inputs_digest(*other) != DIGEST
    same = (sha256('{"services": []}'), "node1", "podnet-services", "/etc/podnet/s.nft", "r1")
    assert inputs_digest(*same) == DIGEST


def test_an_unknown_renderer_never_digests():
    assert inputs_digest(sha256('{"services": []}'), "node1", "podnet-services", None, None) is None


def test_a_trusted_record_reads_as_the_listing_of_what_it_recorded():
    for rules in (OLD, ruleset(sticky=("10.244.1.12",))):
        live = trusted_live(record_of(rules), False)
        assert {name: set(values) for name, values in live["elements"].items()} == live_of(rules)["elements"]
        assert live["chains"] == live_of(rules)["chains"]


def test_update_summary():
    plan = plan_nft_update(ruleset(web=("10.244.1.5",)), live_of(OLD), record_of(OLD), True)
    assert update_summary("ip podnet-services", plan["diff"]) == (
        "update table ip podnet-services: 2 elements deleted, 1 added, 0 pick chains added, 0 deleted")
    assert update_summary("ip t", plan_nft_update(OLD, live_of(OLD), record_of(OLD), True)["diff"]) is None


SAVE = """# Generated by iptables-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
"""


def test_parse_iptables_save_keeps_only_kube_chains():
    assert parse_iptables_save(SAVE) == {
        "KUBE-SERVICES": ["-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A"],
        "KUBE-SVC-A": [],
        "KUBE-MARK-MASQ": ["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"],
    }


RECORDED = {"nat": {"KUBE-SERVICES": ["-A KUBE-SERVICES x"],
                    "KUBE-SVC-A": ["-A KUBE-SVC-A a", "-A KUBE-SVC-A b"]},
            "filter": {"KUBE-FORWARD": []}}
SAME = {"nat": {"KUBE-SERVICES": ["-A KUBE-SERVICES y"],
                "KUBE-SVC-A": ["-A KUBE-SVC-A b", "-A KUBE-SVC-A a"]},
        "filter": {"KUBE-FORWARD": []}}


def _with(live, table, chain, rules):
    live = copy.deepcopy(live)
    if rules is None:
        del live[table][chain]
    else:
        live[table][chain] = rules
    return live


@pytest.mark.parametrize(("live", "marks"), [
    P(SAME, [], id="same counts, other order and text: no drift"),
    P(_with(SAME, "nat", "KUBE-SVC-A", ["a"]), ["nat KUBE-SVC-A"], id="a rule deleted by hand"),
    P(_with(SAME, "nat", "KUBE-SERVICES", ["x", "extra"]), ["nat KUBE-SERVICES"], id="a rule added by hand"),
    P(_with(SAME, "filter", "KUBE-FORWARD", None), ["filter KUBE-FORWARD"], id="an empty chain deleted"),
    P(_with(SAME, "nat", "KUBE-SVC-A", None), ["nat KUBE-SVC-A"], id="a chain deleted"),
    P(_with(SAME, "nat", "KUBE-OTHER", ["z"]), [], id="chains podnet never wrote are not its business"),
])
def test_iptables_drift(live, marks):
    previous, got = iptables_drift(RECORDED, live)
    assert got == marks
    for mark in marks:
        table, chain = mark.split()
        assert previous[table][chain] == ["(changed outside podnet)"]
    untouched = {(t, c) for t in RECORDED for c in RECORDED[t]} - {tuple(m.split()) for m in marks}
    assert all(previous[t][c] == RECORDED[t][c] for t, c in untouched)
