"""NetworkPolicy judges the endpoint a Service leads to: the two tracers, one after the other.

A pod's packet to a ClusterIP first meets the Service table (prerouting DNAT picks an
endpoint), then the policy table (forward, on the source's node and, when the endpoint runs
elsewhere, on the endpoint's node). The lab's own files are used: inventory/lab/services.yml
holds the db Service and the db-access policy that opens db only to pods labelled
db-access=true. The live counterpart is in molecule/default/tests/test_network_policy.py.
"""

import pathlib

import pytest
import yaml
from ansible_collections.podnet.network.plugins.module_utils.explain import nft_trace, policy_trace
from ansible_collections.podnet.network.plugins.module_utils.pods.spec import expand_pods
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table
from ansible_collections.podnet.network.plugins.module_utils.services.model import load_services
from ansible_collections.podnet.network.plugins.module_utils.services.nft import full_content, render_nftables

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "lab"
NODES = ("node1", "node2", "node3")


def lab_pods():
    group_vars = yaml.safe_load((LAB / "group_vars" / "all" / "cluster.yml").read_text())
    pods = expand_pods(group_vars["podnet_test_pods"], list(NODES))
    for index, pod in enumerate(pods):
        pod["ip"] = "10.244.%d.%d" % (NODES.index(pod["node"]), 10 + index)
    return pods


PODS = lab_pods()
TEXT = (LAB / "services.yml").read_text()
SERVICES = load_services(TEXT, "services.yml", PODS)
POLICIES = load_policies([(TEXT, "services.yml")], PODS)


def node_addresses(node):
    return {"192.168.56.1%d" % (NODES.index(node) + 1), "10.244.%d.1" % NODES.index(node)}


def through_service(pod, service, port):
    """[(endpoint pod, verdict)] for every endpoint the Service may pick for this pod."""
    svc = next(s for s in SERVICES["services"] if s["name"] == service)
    packet = {"saddr": pod["ip"], "daddr": svc["cluster_ip"], "protocol": "TCP", "dport": port,
              "path": "prerouting"}
    nat = nft_trace.trace(full_content(render_nftables(SERVICES, pod["node"])), packet,
                           node_addresses(pod["node"]))
    assert nat["verdict"] == "ACCEPT" and nat["endpoints"], nat
    outcomes = []
    for endpoint in nat["endpoints"]:
        ip, _, endpoint_port = endpoint.partition(":")
        target = next(p for p in PODS if p["ip"] == ip)
        verdicts = {policy_trace.PolicyTracer(render_table(POLICIES, node)).verdict(
                    "forward", pod["ip"], ip, "TCP", int(endpoint_port))
                    for node in {pod["node"], target["node"]}}
        outcomes.append((target["name"], "accept" if verdicts == {"accept"} else "drop"))
    return outcomes


@pytest.mark.parametrize("source, allowed", [
    ("backend-0", True), ("backend-1", True), ("client", False), ("frontend-0", False), ("web-1", False),
])
def test_db_service_leads_to_db_and_the_policy_judges_db(source, allowed):
    pod = next(p for p in PODS if p["name"] == source)
    assert through_service(pod, "db", 5432) == [("db", "accept" if allowed else "drop")]


def test_policy_that_isolates_db_does_not_touch_other_services():
    client = next(p for p in PODS if p["name"] == "client")
    outcomes = through_service(client, "frontend", 80)
    assert {name for name, _ in outcomes} == {"frontend-0", "frontend-1", "frontend-2"}
    assert {verdict for _, verdict in outcomes} == {"accept"}
