"""recheck_services (services/model.py): the services file checked again when only its
Endpoints and EndpointSlices changed must say exactly what a whole check says: the same
compact text, the same warnings in the same order, the same state for the next time; and
None (a whole check) for anything it cannot be sure of, an error above all."""

import json
import random
import re

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import manifests
from ansible_collections.podnet.network.plugins.module_utils.services.model import (
    ServiceSpecError,
    allocations,
    read_services,
    recheck_services,
)
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import compact

FILE = "services.yml"


def service(name, ns="default", extra=""):
    return ("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\n"
            "spec: {ports: [{name: a, port: 80}]%s}\n" % (name, ns, extra))


def endpoints(name, ips, ns="default", node=True):
    addresses = ", ".join("{ip: %s%s}" % (ip, ", nodeName: n1" if node else "") for ip in ips)
    return ("apiVersion: v1\nkind: Endpoints\nmetadata: {name: %s, namespace: %s}\n"
            "subsets: [{addresses: [%s], ports: [{name: a, port: 8080}]}]\n" % (name, ns, addresses))


def endpoint_slice(name, service_name, ips):
    listed = ", ".join("{addresses: [%s]}" % ip for ip in ips)
    return ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            "metadata: {name: %s, labels: {kubernetes.io/service-name: %s}}\naddressType: IPv4\n"
            "endpoints: [%s]\nports: [{name: a, port: 8080}]\n" % (name, service_name, listed))


POLICY = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n"
          "spec: {podSelector: {}}\n")
LISTED = ("apiVersion: v1\nkind: List\nitems:\n- "
          + endpoints("in-list", ["192.0.2.40"]).replace("\n", "\n  ").rstrip() + "\n")


def base_documents():
    """A file with a bit of everything the reader meets: Services with and without
    selectors, Endpoints and EndpointSlices (one Service fed by both), an ExternalName
    (a warning after all others), endpoints without a node behind Local (a warning each),
    another reader's kind, a List, and a comment before the first document."""
    docs = ["# the lab's Services\n"]
    for i in range(12):
        docs.append(service("svc-%d" % i))
        docs.append(endpoints("svc-%d" % i, ["192.0.2.%d" % (10 + i), "198.51.100.%d" % i]))
    docs.append(service("web", extra=", selector: {app: web}"))
    docs.append(service("sliced"))
    docs.append(endpoint_slice("sliced-a", "sliced", ["203.0.113.1", "203.0.113.2"]))
    docs.append(endpoint_slice("sliced-b", "sliced", ["203.0.113.3"]))
    docs.append(endpoints("sliced", ["203.0.113.9"]))
    docs.append(service("local", extra=", type: NodePort, externalTrafficPolicy: Local"))
    docs.append(endpoints("local", ["192.0.2.99", "192.0.2.98"], node=False))
    docs.append("apiVersion: v1\nkind: Service\nmetadata: {name: alias}\n"
                "spec: {type: ExternalName, externalName: example.com}\n")
    docs.append(POLICY)
    docs.append(service("in-list"))
    docs.append(LISTED)
    docs.append(service("empty"))
    return docs


def text_of(docs):
    return docs[0] + "".join("---\n" + doc for doc in docs[1:])


def whole(text, previous):
    warnings, state = [], {}
    checked = read_services(text, FILE, previous, warn=warnings.append, keep=state)
    return compact(checked), warnings, state, checked


@pytest.fixture(autouse=True)
def fresh_parse():
    manifests._LAST_PARSED[:] = [None, None]


def first(docs):
    text = text_of(docs)
    checked_text, _warnings, state, checked = whole(text, {})
    return state, allocations(checked)


def test_an_endpoint_changed_is_checked_again_as_a_whole_check_would():
    docs = base_documents()
    state, previous = first(docs)
    docs[4] = endpoints("svc-1", ["192.0.2.200", "198.51.100.1"])  # same lines, one address moved
    again = recheck_services(text_of(docs), FILE, state)
    assert again is not None
    assert again == whole(text_of(docs), previous)[:3]
    assert json.loads(again[0])["services"][[s["name"] for s in json.loads(again[0])["services"]]
                                             .index("svc-1")]["manual"][0][2][0]["ip"] == "192.0.2.200"


def test_warnings_keep_their_order_and_places():
    docs = base_documents()
    state, previous = first(docs)
    _text, warnings, _state, _checked = whole(text_of(docs), previous)
    assert len(warnings) == 3 and "has no nodeName" in warnings[0] and "CNAME" in warnings[-1]
    docs[docs.index(endpoints("local", ["192.0.2.99", "192.0.2.98"], node=False))] = \
        endpoints("local", ["192.0.2.97", "192.0.2.98"], node=False)
    again = recheck_services(text_of(docs), FILE, state)
    assert again is not None and again == whole(text_of(docs), previous)[:3]
    assert "192.0.2.97" in again[1][0] and "CNAME" in again[1][-1]


def _replace(docs, old, new):
    docs[docs.index(old)] = new


def _moved(docs, r):
    _endpoint(docs, r, lambda ips: [ips[0], "192.0.2.%d" % r.randrange(100, 250)])


# How a document changes, and what the check again must do: True answer as a whole check
# would, None leave it to a whole check, "error" leave it to the whole check's error,
# "two steps" answer a change and the change back.
EDITS = {
    "an address moved": (_moved, True),
    "addresses reordered": (lambda docs, r: _endpoint(docs, r, lambda ips: ips[::-1]), True),
    "an address more (same lines)": (
        lambda docs, r: _endpoint(docs, r, lambda ips: [*ips, "192.0.2.251"]), True),
    "Endpoints for a Service without any, at the end": (
        lambda docs, r: docs.append(endpoints("empty", ["192.0.2.252"])), True),
    "the last document removed (an Endpoints)": (
        lambda docs, r: docs.append(endpoints("empty", ["192.0.2.253"])), "two steps"),
    "a slice changed": (
        lambda docs, r: _replace(docs, endpoint_slice("sliced-b", "sliced", ["203.0.113.3"]),
                                 endpoint_slice("sliced-b", "sliced", ["203.0.113.4"])), True),
    "a Service changed": (
        lambda docs, r: docs.__setitem__(1, service("svc-0", extra=", clusterIP: 10.96.5.5")), None),
    "an address on a line of its own (the lines move)": (
        lambda docs, r: docs.__setitem__(2, endpoints("svc-0", ["192.0.2.10"]).replace("[{ip:", "\n  [{ip:")),
        None),
    "a document inserted in the middle": (
        lambda docs, r: docs.insert(3, endpoints("empty", ["192.0.2.77"])), None),
    "the List changed": (
        lambda docs, r: _replace(docs, LISTED, LISTED.replace("192.0.2.40", "192.0.2.41")), None),
    "another reader's document changed": (
        lambda docs, r: _replace(docs, POLICY, POLICY.replace("deny", "deny2")), None),
    "a bad address": (lambda docs, r: _endpoint(docs, r, lambda ips: ["127.0.0.1", *ips[1:]]), "error"),
    "an Endpoints for no Service": (lambda docs, r: docs.append(endpoints("nobody", ["192.0.2.5"])), "error"),
    "an Endpoints for a Service with a selector": (
        lambda docs, r: docs.append(endpoints("web", ["192.0.2.5"])), "error"),
    "a duplicate Endpoints": (lambda docs, r: docs.append(endpoints("svc-3", ["192.0.2.5"])), "error"),
}


def _endpoint(docs, r, change):
    """One of the svc-N Endpoints, its addresses changed by `change` (same lines)."""
    i = r.randrange(12)
    at = next(at for at, doc in enumerate(docs) if "kind: Endpoints\nmetadata: {name: svc-%d," % i in doc)
    docs[at] = endpoints("svc-%d" % i, change(re.findall(r"ip: ([0-9.]+)", docs[at])))


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_kind_of_change_is_checked_again_or_left_to_a_whole_check(edit):
    change, expected = EDITS[edit]
    docs = base_documents()
    state, previous = first(docs)
    change(docs, random.Random(edit))
    text = text_of(docs)
    again = recheck_services(text, FILE, state)
    if expected == "error":
        with pytest.raises(ServiceSpecError):
            read_services(text, FILE, previous)
        assert again is None
        return
    if expected == "two steps":
        assert again is not None
        state = again[2]
        docs.pop()
        text = text_of(docs)
        again = recheck_services(text, FILE, state)
    if expected is None:
        assert again is None
    else:
        assert again is not None
        assert again == whole(text, previous)[:3]


def test_forty_runs_of_random_endpoint_changes_in_a_row_match_whole_checks():
    """Each run from the state the last one left: an endpoint moved, added or reordered,
    a slice changed, an Endpoints object added at the end or removed again."""
    for seed in range(40):
        r = random.Random(seed)
        docs = base_documents()
        state, previous = first(docs)
        extra = 0
        for _step in range(5):
            pick = r.randrange(4)
            if pick == 0:
                _moved(docs, r)
            elif pick == 1:
                more = "203.0.113.%d" % r.randrange(10, 99)
                _endpoint(docs, r, lambda ips, more=more: [*ips[::-1], more])
            elif pick == 2 and not extra:
                docs.append(endpoints("empty", ["192.0.2.%d" % r.randrange(2, 9)]))
                extra = 1
            elif extra:
                docs.pop()
                extra = 0
            text = text_of(docs)
            manifests._LAST_PARSED[:] = [None, None]
            again = recheck_services(text, FILE, state)
            assert again is not None, (seed, _step)
            assert again == whole(text, previous)[:3], (seed, _step)
            state = again[2]


def test_nothing_is_rechecked_without_a_state_or_with_another_file():
    docs = base_documents()
    state, _previous = first(docs)
    assert recheck_services(text_of(docs), FILE, {}) is None
    assert recheck_services("%YAML 1.2\n" + text_of(docs), FILE, state) is None
    # The same text under other settings is the caller's to refuse; here: a changed range
    # the Services no longer fit is an error of the whole check, never an answer.
    assert recheck_services(text_of(docs), FILE, state, service_cidr="10.244.0.0/16") is None
