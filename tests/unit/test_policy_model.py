"""The NetworkPolicy model: validation (every error names file, object and field), Kubernetes'
defaulting, selectors, peers, ipBlocks and named ports resolved against podnet's pods."""

import json

import pytest
from ansible_collections.podnet.network.plugins.module_utils.policy.model import (
    PolicySpecError,
    describe,
    load_policies,
    selects,
)
from ansible_collections.podnet.network.plugins.module_utils.services.model import ServiceSpecError


def pod(namespace, name, ip, node, ports=(), **labels):
    return {"namespace": namespace, "name": name, "labels": labels, "ip": ip, "node": node,
            "ports": [{"name": n, "containerPort": number, "protocol": proto} for n, number, proto in ports]}


PODS = [
    pod("x", "web-0", "10.244.1.10", "node1", [("http", 8080, "TCP"), ("dns", 53, "UDP")], app="web"),
    pod("x", "web-1", "10.244.2.10", "node2", [("http", 8081, "TCP")], app="web"),
    pod("x", "client", "10.244.1.11", "node1", app="client"),
    pod("y", "client", "10.244.2.11", "node2", app="client"),
    pod("z", "db", "10.244.3.10", "node3", [("http", 9090, "TCP")], app="db", tier="back"),
    pod("x", "pending", None, "node3", [("http", 8082, "TCP")], app="web"),
]
NAMESPACES = "apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {team: red}}\n"


def policy(spec, name="p", namespace="x"):
    """A NetworkPolicy document in flow style: one document, four lines."""
    return ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s, namespace: %s}\n"
            "spec: %s\n" % (name, namespace, spec))


def load(*texts, pods=PODS):
    """Each text is a file: policies.yml, then policies2.yml, ..."""
    names = ["policies.yml"] + ["policies%d.yml" % (i + 2) for i in range(len(texts) - 1)]
    return load_policies(list(zip(texts, names, strict=True)), pods)


def only(text, pods=PODS):
    model = load(NAMESPACES + "---\n" + text, pods=pods)
    assert len(model["policies"]) == 1
    return model["policies"][0]


# --- validation -----------------------------------------------------------------------------------

P1 = "policies.yml: document 1 (line 1), NetworkPolicy x/p: "
IN0 = "spec.ingress[0]"


@pytest.mark.parametrize("spec, expected", [
    ("{}", "spec.podSelector: is required ({} selects every pod in namespace x)"),
    ("{podSelector: {}, podselector: {}}", "spec.podselector: unknown field (did you mean podSelector?)"),
    ("{podSelector: {matchLabel: {a: b}}}", "spec.podSelector.matchLabel: unknown field (did you mean "
                                            "matchLabels?)"),
    ("{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}",
     "spec.podSelector.matchExpressions[0].operator: must be one of In|NotIn|Exists|DoesNotExist, "
     "got 'Equals'"),
    ("{podSelector: {matchExpressions: [{key: a, values: [b]}]}}",
     "spec.podSelector.matchExpressions[0].operator: is required"),
    ("{podSelector: {matchExpressions: [{key: a, operator: In}]}}",
     "spec.podSelector.matchExpressions[0].values: must be non-empty when operator is In"),
    ("{podSelector: {matchExpressions: [{key: a, operator: NotIn, values: []}]}}",
     "spec.podSelector.matchExpressions[0].values: must be non-empty when operator is NotIn"),
    ("{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}",
     "spec.podSelector.matchExpressions[0].values: must be empty when operator is Exists"),
    ("{podSelector: {matchExpressions: [{key: a, operator: DoesNotExist, values: [b]}]}}",
     "spec.podSelector.matchExpressions[0].values: must be empty when operator is DoesNotExist"),
    ("{podSelector: {matchExpressions: [{operator: Exists}]}}",
     "spec.podSelector.matchExpressions[0].key: None is not a label key"),
    ("{podSelector: {matchExpressions: [{key: a, operator: In, values: ['b c']}]}}",
     "spec.podSelector.matchExpressions[0].values[0]: 'b c' is not a label value"),
    ("{podSelector: {matchLabels: {-a: b}}}", "spec.podSelector.matchLabels['-a']: '-a' is not a label key"),
    ("{podSelector: {matchLabels: {Example.com/a: b}}}",
     "spec.podSelector.matchLabels['Example.com/a']: 'Example.com/a' is not a label key: an optional "
     "DNS-1123 subdomain prefix and '/', then a name of at most 63 characters, alphanumerics, '-', '_' or "
     "'.', starting and ending alphanumeric (the prefix 'Example.com' is not)"),
    ("{podSelector: {matchLabels: {/a: b}}}", "spec.podSelector.matchLabels['/a']: '/a' is not a label key"),
    ("{podSelector: {matchLabels: {%s: b}}}" % ("a" * 64), "is not a label key"),
    ("{podSelector: {matchLabels: {a: b_}}}", "spec.podSelector.matchLabels['a']: 'b_' is not a label value"),
    ("{podSelector: {matchLabels: {a: %s}}}" % ("b" * 64), "is not a label value"),
    ("{podSelector: {matchLabels: {a: 1}}}", "spec.podSelector.matchLabels['a']: 1 is not a label value"),
    ("{podSelector: {}, policyTypes: [Ingres]}", "spec.policyTypes[0]: must be one of Ingress|Egress, "
                                                 "got 'Ingres'"),
    ("{podSelector: {}, policyTypes: [Ingress, Egress, Ingress]}", "spec.policyTypes: may hold at most two"),
    ("{podSelector: {}, policyTypes: Ingress}", "spec.policyTypes: must be a list, got 'Ingress'"),
    ("{podSelector: {}, policyTypes: [null]}", "spec.policyTypes[0]: must be one of Ingress|Egress"),
    ("{podSelector: {}, ingress: {}}", "spec.ingress: must be a list, got {}"),
    ("{podSelector: {}, ingress: [{form: []}]}", IN0 + ".form: unknown field (did you mean from?)"),
    ("{podSelector: {}, egress: [{from: []}]}", "spec.egress[0].from: unknown field"),
    ("{podSelector: {}, ingress: [{from: [{}]}]}",
     IN0 + ".from[0]: a peer needs podSelector, namespaceSelector (or both), or ipBlock"),
    ("{podSelector: {}, ingress: [{from: [{podSelector: null}]}]}", IN0 + ".from[0]: a peer needs"),
    ("{podSelector: {}, ingress: [{from: [{podselector: {}}]}]}",
     IN0 + ".from[0].podselector: unknown field (did you mean podSelector?)"),
    ("{podSelector: {}, ingress: [{from: [{podSelector: {}}, "
     "{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}",
     IN0 + ".from[1]: ipBlock may not be combined with podSelector in one peer: make them two peers"),
    ("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]}",
     "spec.egress[0].to[0]: ipBlock may not be combined with namespaceSelector"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {except: [10.0.0.0/16]}}]}]}",
     IN0 + ".from[0].ipBlock.cidr: is required"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0}}]}]}",
     IN0 + ".from[0].ipBlock.cidr: '10.0.0.0' is not a CIDR such as 10.0.0.0/8"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}",
     "ipBlock.cidr: '10.0.0.0/33' is not"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, excpt: []}}]}]}",
     IN0 + ".from[0].ipBlock.excpt: unknown field (did you mean except?)"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]}",
     IN0 + ".from[0].ipBlock.except[0]: 10.1.0.0/24 must be a strict subset of cidr 10.0.0.0/16"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, "
     "except: [10.0.1.0/24, 10.0.0.0/16]}}]}]}",
     IN0 + ".from[0].ipBlock.except[1]: 10.0.0.0/16 must be a strict subset of cidr 10.0.0.0/16"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/8]}}]}]}",
     "except[0]: 10.0.0.0/8 must be a strict subset"),
    ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: ['fd00::/64']}}]}]}",
     "except[0]: fd00::/64 must be a strict subset of cidr 10.0.0.0/16"),
    ("{podSelector: {}, egress: [{ports: [{port: 80, endPort: 79}]}]}",
     "spec.egress[0].ports[0].endPort: 79 must not be less than port 80"),
    ("{podSelector: {}, egress: [{ports: [{port: http, endPort: 90}]}]}",
     "spec.egress[0].ports[0].endPort: may only be set with a numbered port, not the named port 'http'"),
    ("{podSelector: {}, egress: [{ports: [{endPort: 90}]}]}",
     "spec.egress[0].ports[0].endPort: requires port (the first port of the range)"),
    ("{podSelector: {}, egress: [{ports: [{port: 80, endPort: 65536}]}]}",
     "spec.egress[0].ports[0].endPort: must be an integer 1-65535, got 65536"),
    ("{podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}",
     IN0 + ".ports[0].protocol: must be one of TCP|UDP|SCTP, got 'ICMP'"),
    ("{podSelector: {}, ingress: [{ports: [{protocol: tcp, port: 80}]}]}",
     IN0 + ".ports[0].protocol: must be one of TCP|UDP|SCTP, got 'tcp'"),
    ("{podSelector: {}, ingress: [{ports: [{port: 0}]}]}",
     IN0 + ".ports[0].port: must be an integer 1-65535"),
    ("{podSelector: {}, ingress: [{ports: [{port: 65536}]}]}", IN0 + ".ports[0].port: must be an integer"),
    ("{podSelector: {}, ingress: [{ports: [{port: true}]}]}", IN0 + ".ports[0].port: must be an integer"),
    ("{podSelector: {}, ingress: [{ports: [{port: '80'}]}]}",
     IN0 + ".ports[0].port: '80' is a string: write a port number without quotes"),
    ("{podSelector: {}, ingress: [{ports: [{port: HTTP}]}]}",
     IN0 + ".ports[0].port: 'HTTP' is not an IANA service name"),
    ("{podSelector: {}, ingress: [{ports: [{port: a-very-long-port-name}]}]}", "is not an IANA service name"),
    ("{podSelector: {}, ingress: [{ports: [{prot: 80}]}]}",
     IN0 + ".ports[0].prot: unknown field (did you mean port?)"),
    ("{podSelector: {}, ingress: [{ports: [80]}]}", IN0 + ".ports[0]: must be a mapping, got 80"),
    ("{podSelector: {}, ingress: [{from: [{namespaceSelector: "
     "{matchExpressions: [{key: a, operator: In}]}}]}]}",
     IN0 + ".from[0].namespaceSelector.matchExpressions[0].values: must be non-empty when operator is In"),
])
def test_errors_name_file_object_and_field(spec, expected):
    with pytest.raises(PolicySpecError) as error:
        load(policy(spec))
    message = str(error.value)
    assert message.startswith(P1), message
    assert expected in message, message


@pytest.mark.parametrize("text, expected", [
    (policy("{podSelector: {}}", name="P_1"),
     "policies.yml: document 1 (line 1), NetworkPolicy: metadata.name: 'P_1' is not a DNS-1123 subdomain"),
    (policy("{podSelector: {}}", namespace="X"),
     "NetworkPolicy: metadata.namespace: 'X' is not a DNS-1123 label"),
    (policy("{podSelector: {}}") + "---\n" + policy("{podSelector: {matchLabels: {a: b}}}"),
     "policies.yml: document 2 (line 6), NetworkPolicy x/p: metadata.name: duplicate NetworkPolicy x/p: the "
     "first is policies.yml: document 1 (line 1)"),
    (policy("{podSelector: {}}").replace("networking.k8s.io/v1", "extensions/v1beta1"),
     "policies.yml: document 1 (line 1), NetworkPolicy: apiVersion: extensions/v1beta1 is not the apiVersion "
     "of kind NetworkPolicy: use networking.k8s.io/v1"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
     "policies.yml: document 1 (line 1): kind: kind Deployment is not supported here; the file holds "
     "Service, Endpoints and EndpointSlice objects, and NetworkPolicy and Namespace objects"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {'a b': c}}\n",
     "policies.yml: document 1 (line 1), Namespace y: metadata.labels['a b']: 'a b' is not a label key"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {team: 'red!'}}\n",
     "policies.yml: document 1 (line 1), Namespace y: metadata.labels['team']: 'red!' is not a label value"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: [team]}\n",
     "Namespace y: metadata.labels: must be a mapping"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: Y}\n",
     "policies.yml: document 1 (line 1), Namespace: metadata.name: 'Y' is not a DNS-1123 label"),
    (NAMESPACES + "---\n" + NAMESPACES,
     "policies.yml: document 2 (line 5), Namespace y: metadata.name: duplicate Namespace y: the first is "
     "policies.yml: document 1 (line 1)"),
    ("spec: {podSelector: {}\n", "policies.yml: line 2, column 1: YAML does not parse"),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n"
     "spec: {}\n",
     "policies.yml: line 5, column 1: YAML does not parse: duplicate key 'spec' (also on line 4)"),
    ("apiVersion: v1\nkind: List\nitems:\n- " + policy("{}").replace("\n", "\n  "),
     "policies.yml: document 1 (line 1), items[0], NetworkPolicy x/p: spec.podSelector: is required"),
])
def test_object_errors(text, expected):
    with pytest.raises(PolicySpecError) as error:
        load(text)
    assert expected in str(error.value), str(error.value)


def test_duplicate_across_files_names_both():
    with pytest.raises(PolicySpecError) as error:
        load(policy("{podSelector: {}}"), policy("{podSelector: {}}"))
    assert str(error.value) == ("policies2.yml: document 1 (line 1), NetworkPolicy x/p: metadata.name: "
                                "duplicate NetworkPolicy x/p: the first is policies.yml: document 1 (line 1)")


def test_policy_error_is_a_services_error():
    """The filter plugin and the role catch ServiceSpecError for both files."""
    assert issubclass(PolicySpecError, ServiceSpecError)


def test_bad_cluster_cidr():
    with pytest.raises(PolicySpecError, match="cluster_cidr: 'ten' is not an IPv4 network"):
        load_policies([], [], cluster_cidr="ten")


# --- what is read ---------------------------------------------------------------------------------

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {ports: [{port: 80}]}\n"


def test_services_skipped_and_file_order_kept():
    model = load(SERVICE + "---\n" + policy("{podSelector: {}}", name="zz") + "---\n"
                 + "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\n",
                 policy("{podSelector: {}}", name="aa") + "---\n" + NAMESPACES)
    assert [(p["name"], p["source"]) for p in model["policies"]] == [
        ("zz", "policies.yml: document 2 (line 6)"), ("aa", "policies2.yml: document 1 (line 1)")]
    assert model["namespaces"]["y"] == {"kubernetes.io/metadata.name": "y", "team": "red"}


def test_list_of_policies():
    text = "apiVersion: v1\nkind: List\nitems:\n- " + policy("{podSelector: {}}").replace("\n", "\n  ")
    assert [p["name"] for p in load(text)["policies"]] == ["p"]


def test_no_sources():
    assert load_policies([], PODS)["policies"] == []


def test_namespaces_automatic_label():
    """Every namespace carries kubernetes.io/metadata.name; one with pods but no object exists too."""
    text = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {kubernetes.io/metadata.name: lie}}"
            "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: empty, namespace: ignored}\n")
    assert load(text)["namespaces"] == {
        "empty": {"kubernetes.io/metadata.name": "empty"},
        "x": {"kubernetes.io/metadata.name": "x"},
        "y": {"kubernetes.io/metadata.name": "y"},
        "z": {"kubernetes.io/metadata.name": "z"},
    }


def test_model_is_json():
    text = NAMESPACES + "---\n" + policy(
        "{podSelector: {}, ingress: [{from: [{podSelector: {}}], ports: [{port: http}]}], egress: [{}]}")
    model = load(text)
    assert json.loads(json.dumps(model)) == model


# --- policyTypes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, types", [
    ("{podSelector: {}}", ["Ingress"]),
    ("{podSelector: {}, egress: []}", ["Ingress"]),
    ("{podSelector: {}, egress: [{}]}", ["Ingress", "Egress"]),
    ("{podSelector: {}, ingress: [{}], egress: [{to: [{podSelector: {}}]}]}", ["Ingress", "Egress"]),
    ("{podSelector: {}, policyTypes: []}", ["Ingress"]),
    ("{podSelector: {}, policyTypes: [Egress]}", ["Egress"]),
    ("{podSelector: {}, policyTypes: [Egress, Ingress]}", ["Ingress", "Egress"]),
    ("{podSelector: {}, policyTypes: [Egress, Egress]}", ["Egress"]),
])
def test_policy_types_defaulting(spec, types):
    assert only(policy(spec))["policy_types"] == types


def test_section_outside_policy_types_is_ignored():
    """Kubernetes keeps (and validates) the ingress section of an Egress-only policy, and ignores it."""
    found = only(policy("{podSelector: {}, policyTypes: [Egress], ingress: [{}], egress: [{}]}"))
    assert found["ingress"] == [] and len(found["egress"]) == 1
    with pytest.raises(PolicySpecError, match=r"spec.ingress\[0\].ports\[0\].port"):
        load(policy("{podSelector: {}, policyTypes: [Egress], ingress: [{ports: [{port: 0}]}]}"))


def test_deny_all_and_allow_all_rules():
    deny = only(policy("{podSelector: {}, ingress: []}"))
    assert deny["ingress"] == []
    allow = only(policy("{podSelector: {}, ingress: [{}]}"))["ingress"]
    assert allow == [{"name": "ingress[0]", "peers": None, "peer_pods": [], "peer_blocks": [], "ports": None}]
    empty_lists = only(policy("{podSelector: {}, ingress: [{from: [], ports: []}]}"))["ingress"]
    assert empty_lists == allow


# --- selectors ------------------------------------------------------------------------------------

def selected(selector, namespace="x"):
    found = only(policy("{podSelector: %s}" % selector, namespace=namespace))
    return [p["pod"] for p in found["pods"]] + found["pending_pods"]


@pytest.mark.parametrize("selector, pods", [
    ("{}", ["x/web-0", "x/client", "x/web-1", "x/pending"]),
    ("{matchLabels: {app: web}}", ["x/web-0", "x/web-1", "x/pending"]),
    ("{matchLabels: {app: db}}", []),
    ("{matchExpressions: [{key: app, operator: In, values: [client, nothing]}]}", ["x/client"]),
    ("{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}", ["x/client"]),
    ("{matchExpressions: [{key: tier, operator: NotIn, values: [back]}]}",
     ["x/web-0", "x/client", "x/web-1", "x/pending"]),
    ("{matchExpressions: [{key: app, operator: Exists}]}", ["x/web-0", "x/client", "x/web-1", "x/pending"]),
    ("{matchExpressions: [{key: tier, operator: Exists}]}", []),
    ("{matchExpressions: [{key: tier, operator: DoesNotExist}]}", ["x/web-0", "x/client", "x/web-1",
                                                                   "x/pending"]),
    ("{matchLabels: {app: web}, matchExpressions: [{key: app, operator: In, values: [client]}]}", []),
])
def test_pod_selector(selector, pods):
    assert selected(selector) == pods


def test_selects_only_in_own_namespace_and_sorted_by_address():
    assert selected("{}", namespace="z") == ["z/db"]
    found = only(policy("{podSelector: {}}"))
    assert [p["ip"] for p in found["pods"]] == ["10.244.1.10", "10.244.1.11", "10.244.2.10"]
    assert found["pods"][0] == {"pod": "x/web-0", "ip": "10.244.1.10", "node": "node1"}


def test_selects_function():
    selector = {"match_labels": {"a": "1"}, "expressions": [["b", "NotIn", ["2"]], ["c", "DoesNotExist", []]]}
    assert selects(selector, {"a": "1"})
    assert selects(selector, {"a": "1", "b": "3"})
    assert not selects(selector, {"a": "1", "b": "2"})
    assert not selects(selector, {"a": "1", "c": ""})
    assert not selects(selector, {"b": "3"})


# --- peers ----------------------------------------------------------------------------------------

def peers(peer_list, namespace="x"):
    found = only(policy("{podSelector: {}, ingress: [{from: %s}]}" % peer_list, namespace=namespace))
    rule = found["ingress"][0]
    return rule["peer_pods"], rule["peers"]


@pytest.mark.parametrize("peer_list, pods, addresses", [
    ("[{podSelector: {matchLabels: {app: client}}}]", ["x/client"], ["10.244.1.11/32"]),
    ("[{podSelector: {}}]", ["x/client", "x/pending", "x/web-0", "x/web-1"],
     ["10.244.1.10/31", "10.244.2.10/32"]),
    ("[{namespaceSelector: {matchLabels: {team: red}}}]", ["y/client"], ["10.244.2.11/32"]),
    ("[{namespaceSelector: {}}]", ["x/client", "x/pending", "x/web-0", "x/web-1", "y/client", "z/db"],
     ["10.244.1.10/31", "10.244.2.10/31", "10.244.3.10/32"]),
    ("[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]", ["z/db"], ["10.244.3.10/32"]),
    ("[{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]", ["x/client", "y/client"],
     ["10.244.1.11/32", "10.244.2.11/32"]),
    ("[{namespaceSelector: {matchLabels: {team: red}}, podSelector: {matchLabels: {app: web}}}]", [], []),
    ("[{podSelector: {matchLabels: {app: nothing}}}]", [], []),
    ("[{podSelector: {matchLabels: {app: client}}}, {namespaceSelector: {matchLabels: {team: red}}}]",
     ["x/client", "y/client"], ["10.244.1.11/32", "10.244.2.11/32"]),
])
def test_selector_peers(peer_list, pods, addresses):
    assert peers(peer_list) == (pods, addresses)


def test_pod_selector_peer_stays_in_the_policy_namespace():
    assert peers("[{podSelector: {matchLabels: {app: client}}}]", namespace="y") == (["y/client"],
                                                                                     ["10.244.2.11/32"])


@pytest.mark.parametrize("block, addresses", [
    ("{cidr: 10.0.0.0/8}", ["10.0.0.0/8"]),
    ("{cidr: 10.1.2.3/8}", ["10.0.0.0/8"]),  # host bits: Kubernetes parses it sloppily too
    ("{cidr: 10.0.0.0/8, except: [10.128.0.0/9]}", ["10.0.0.0/9"]),
    ("{cidr: 10.0.0.0/8, except: [10.0.0.0/9, 10.128.0.0/10]}", ["10.192.0.0/10"]),
    ("{cidr: 10.0.0.0/30, except: [10.0.0.1/32]}", ["10.0.0.0/32", "10.0.0.2/31"]),
    ("{cidr: 10.0.0.0/24, except: [10.0.0.0/25, 10.0.0.0/26]}", ["10.0.0.128/25"]),
    ("{cidr: 0.0.0.0/0}", ["0.0.0.0/0"]),
    ("{cidr: 'fd00::/8'}", []),  # an IPv6 block never matches in an IPv4 cluster
])
def test_ip_block(block, addresses):
    assert peers("[{ipBlock: %s}]" % block)[1] == addresses


def test_ip_block_and_pods_collapse():
    """Overlapping peers become one set of disjoint ranges (nft refuses overlapping intervals)."""
    pods, addresses = peers("[{podSelector: {}}, {ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}}]")
    assert addresses == ["10.244.0.0/23", "10.244.2.10/32", "10.244.3.0/24", "10.244.4.0/22",
                         "10.244.8.0/21", "10.244.16.0/20", "10.244.32.0/19", "10.244.64.0/18",
                         "10.244.128.0/17"]
    rule = only(policy("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: "
                       "[10.1.0.0/16]}}]}]}"))["ingress"][0]
    assert rule["peer_blocks"] == ["10.0.0.0/8 except 10.1.0.0/16"]


# --- ports ----------------------------------------------------------------------------------------

def ports(port_list, direction="ingress", selector="{matchLabels: {app: web}}", peer_list=None):
    field = "from" if direction == "ingress" else "to"
    rule = "{ports: %s%s}" % (port_list, ", %s: %s" % (field, peer_list) if peer_list else "")
    found = only(policy("{podSelector: %s, policyTypes: [%s], %s: [%s]}"
                        % (selector, direction.capitalize(), direction, rule)))
    return found[direction][0]["ports"]


def test_numbered_ports_and_ranges_merged():
    assert ports("[{port: 80}, {port: 81, endPort: 90}, {port: 85, endPort: 100}, {port: 53, protocol: UDP}, "
                 "{protocol: SCTP}, {port: 102}]") == {
        "ranges": [["SCTP", 0, 65535], ["TCP", 80, 100], ["TCP", 102, 102], ["UDP", 53, 53]],
        "named_ports": [], "named": []}


def test_ingress_named_port_resolves_on_each_selected_pod():
    """web-0 calls 8080 http, web-1 8081; the pod not started yet has no address."""
    assert ports("[{port: http}, {port: dns, protocol: UDP}, {port: dns}]") == {
        "ranges": [], "named_ports": ["TCP/dns", "TCP/http", "UDP/dns"],
        "named": [["10.244.1.10", "TCP", 8080], ["10.244.1.10", "UDP", 53], ["10.244.2.10", "TCP", 8081]]}


def test_ingress_named_port_no_pod_has_it():
    assert ports("[{port: metrics}]") == {"ranges": [], "named_ports": ["TCP/metrics"], "named": []}


def test_egress_named_port_resolves_on_destination_pods():
    """Every known pod that declares it, within the rule's peers."""
    assert ports("[{port: http}]", "egress", selector="{matchLabels: {app: client}}")["named"] == [
        ["10.244.1.10", "TCP", 8080], ["10.244.2.10", "TCP", 8081], ["10.244.3.10", "TCP", 9090]]
    assert ports("[{port: http}, {port: 443}]", "egress", selector="{matchLabels: {app: client}}",
                 peer_list="[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]") == {
        "ranges": [["TCP", 443, 443]], "named_ports": ["TCP/http"], "named": [["10.244.3.10", "TCP", 9090]]}
    assert ports("[{port: http}]", "egress", peer_list="[{ipBlock: {cidr: 10.244.2.0/24}}]")["named"] == [
        ["10.244.2.10", "TCP", 8081]]


def test_pods_without_ports_or_namespace():
    """podnet's pods may leave out namespace, labels and ports."""
    model = load(policy("{podSelector: {}, ingress: [{ports: [{port: http}]}]}", namespace="default"),
                 pods=[{"name": "a", "ip": "10.244.1.2", "node": "node1"}])
    assert model["policies"][0]["pods"] == [{"pod": "default/a", "ip": "10.244.1.2", "node": "node1"}]
    assert model["policies"][0]["ingress"][0]["ports"]["named"] == []


# --- describe -------------------------------------------------------------------------------------

def test_describe():
    text = NAMESPACES + "---\n" + policy(
        "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: "
        "{app: client}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], "
        "ports: [{port: 80, endPort: 81}, {port: http}]}], "
        "egress: [{to: [{podSelector: {matchLabels: {app: nothing}}}]}]}", name="web")
    text += "---\n" + policy("{podSelector: {}}", name="deny", namespace="z")
    assert describe(load(text)) == [
        "x/web: isolates ingress of x/web-0, x/web-1, x/pending (no IP yet); ingress[0] from x/client, "
        "10.0.0.0/8 except 10.1.0.0/16 on TCP/80-81, TCP/http; isolates egress of x/web-0, x/web-1, "
        "x/pending (no IP yet); egress[0] to nothing (no pod matches) on any port",
        "z/deny: isolates ingress of z/db; allows none",
    ]


def test_bad_pod_address():
    with pytest.raises(PolicySpecError, match=r"pod x/a: ip '10.244.1.300' is not an IPv4 address"):
        load(policy("{podSelector: {}}"), pods=[pod("x", "a", "10.244.1.300", "node1")])
