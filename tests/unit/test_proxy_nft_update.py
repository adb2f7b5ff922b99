"""A change of some Services rendered alone (nft.render_update) is the whole render, element
for element, shared elements counted: every row is a change of the test model, and every
node's table from the old table plus the changed Services must equal the new model's whole
render (or render_update must say it cannot, when the skeleton changes)."""

import copy
import random

import pytest
from ansible_collections.podnet.network.plugins.module_utils.services.nft import (
    full_content,
    render_counted,
    render_update,
)

from tests.unit.test_proxy_nft import MODEL, NODES, endpoint, port, service


def key(svc):
    return svc["namespace"], svc["name"]


def changed(model, edit):
    new = copy.deepcopy(model)
    edit(new["services"])
    new["services"].sort(key=key)
    return new


def by_name(services, name):
    return next(svc for svc in services if svc["name"] == name)


def drop_first_endpoint(name):
    return lambda services: by_name(services, name)["ports"][0]["endpoints"].pop(0)


def also_behind(name, ip, port_number=8080):
    """`name` gets the pod `ip` as an endpoint too: a pod behind two Services (shared hairpin)."""
    return lambda services: by_name(services, name)["ports"][0]["endpoints"].append(endpoint(ip, port_number))


def remove(name):
    return lambda services: services.remove(by_name(services, name))


def add(svc):
    return lambda services: services.append(svc)


def setting(name, field, value):
    return lambda services: by_name(services, name).__setitem__(field, value)


TWIN = service("twin", "10.96.0.30", [port("", "TCP", 81, 8080, [endpoint("10.244.1.5", 8080)])],
               external_ips=["198.51.100.10"], etp="Local")

# (why, edit): each applied to MODEL, rendered both ways.
CHANGES = [
    ("an endpoint gone", drop_first_endpoint("web")),
    ("a NodePort's endpoint gone", drop_first_endpoint("np-cluster")),
    ("an eTP Local endpoint gone", drop_first_endpoint("np-local")),
    ("an iTP Local Service's last local endpoint on node1 gone", drop_first_endpoint("itp-local")),
    ("one of 20 endpoints gone (another pick chain)", drop_first_endpoint("big")),
    ("a pod behind a second Service", also_behind("np-cluster", "10.244.1.5")),
    ("a Service sharing a pod and an externalIP added", add(TWIN)),
    ("a Service removed", remove("sctp")),
    ("the only Service of its endpoint count removed", remove("big")),
    ("a headless Service removed", remove("headless")),
    ("a Service's endpoints all gone",
     lambda services: by_name(services, "web")["ports"][1].update(endpoints=[])),
    ("an empty Service gets an endpoint", also_behind("empty", "10.244.3.20")),
    ("a ClusterIP Service becomes eTP Local with an externalIP",
     lambda services: by_name(services, "web").update(external_ips=["198.51.100.20"],
                                                       external_traffic_policy="Local")),
    ("a sticky Service keeps its timeout and loses an endpoint", drop_first_endpoint("sticky")),
]

# Changes of the skeleton: render_update declines, the model is rendered whole.
SKELETON_CHANGES = [
    ("the only sticky Service removed", remove("sticky")),
    ("a new affinity timeout", setting("web", "session_affinity_timeout", 60)),
    ("the one timeout in use changes", setting("sticky", "session_affinity_timeout", 60)),
]


def differing(old, new):
    """(before, after): the Services of each model that the other does not hold as they are."""
    old_by_key, new_by_key = {key(s): s for s in old["services"]}, {key(s): s for s in new["services"]}
    before = [s for k, s in old_by_key.items() if new_by_key.get(k) != s]
    after = [s for k, s in new_by_key.items() if old_by_key.get(k) != s]
    return before, after


@pytest.mark.parametrize("node", sorted(NODES))
@pytest.mark.parametrize("why, edit", CHANGES, ids=[why for why, _edit in CHANGES])
def test_a_change_rendered_alone_is_the_whole_render(why, edit, node):
    new = changed(MODEL, edit)
    old_ruleset, old_shared = render_counted(MODEL, node, generation=1)
    updated = render_update(old_ruleset, old_shared, *differing(MODEL, new), new, node, generation=2)
    assert updated == render_counted(new, node, generation=2), why
    # The boot script too, to the byte (the elements' order is one order).
    assert full_content(updated[0]) == full_content(render_counted(new, node, generation=2)[0])


@pytest.mark.parametrize("why, edit", SKELETON_CHANGES, ids=[why for why, _edit in SKELETON_CHANGES])
def test_a_change_of_the_skeleton_is_rendered_whole(why, edit):
    new = changed(MODEL, edit)
    old_ruleset, old_shared = render_counted(MODEL, "node1")
    assert render_update(old_ruleset, old_shared, *differing(MODEL, new), new, "node1") is None, why


def test_shared_elements_are_counted_and_kept_while_any_service_adds_them():
    """A pod behind two Services hairpins through either: the element stays until both let go."""
    both = changed(MODEL, also_behind("np-cluster", "10.244.1.5"))
    ruleset, shared = render_counted(both, "node1")
    assert shared["hairpin"]["10.244.1.5 . 10.244.1.5"] == 3  # web's two ports, np-cluster's one
    one_left = changed(both, lambda services: [p.update(endpoints=[e for e in p["endpoints"]
                                                                   if e["ip"] != "10.244.1.5"])
                                               for p in by_name(services, "web")["ports"]])
    updated, left = render_update(ruleset, shared, *differing(both, one_left), one_left, "node1")
    assert "10.244.1.5 . 10.244.1.5" in updated["elements"]["hairpin"]
    assert "10.244.1.5 . 10.244.1.5" not in left.get("hairpin", {})
    assert (updated, left) == render_counted(one_left, "node1")


def random_change(rng, model):
    services = model["services"]
    svc = rng.choice(services)
    what = rng.randrange(5)
    if what == 0 and svc["ports"] and svc["ports"][0]["endpoints"]:
        svc["ports"][0]["endpoints"].pop(rng.randrange(len(svc["ports"][0]["endpoints"])))
    elif what == 1 and svc["ports"]:
        svc["ports"][0]["endpoints"].append(endpoint("10.244.%d.%d" % (rng.randint(1, 3), rng.randint(5, 13)),
                                                     8080))
    elif what == 2 and len(services) > 2:
        services.remove(svc)
    elif what == 3:
        number = rng.randint(40, 250)
        endpoints = [endpoint("10.244.%d.%d" % (n, rng.randint(5, 13)), 8080) for n in (1, 2, 3)]
        services.append(service("new-%d" % number, "10.96.1.%d" % number, [
            port("", rng.choice(["TCP", "UDP"]), 80, 8080, endpoints[:rng.randint(0, 3)],
                 node_port=30100 + number if rng.random() < 0.3 else None)],
            kind="NodePort" if rng.random() < 0.3 else "ClusterIP",
            external_ips=["198.51.100.10"] if rng.random() < 0.2 else (),
            etp=rng.choice(["Cluster", "Local"])))
        if services[-1]["ports"][0]["node_port"] is None and not services[-1]["external_ips"]:
            services[-1]["external_traffic_policy"] = "Cluster"
    else:
        svc["internal_traffic_policy"] = rng.choice(["Cluster", "Local"])
    # Unique names, as a model has them.
    seen = {}
    for item in services:
        seen.setdefault(key(item), item)
    services[:] = list(seen.values())


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_in_a_row_stay_the_whole_render(seed):
    """Delta after delta from its own result, as a node applies them run after run."""
    rng = random.Random(seed)
    node = rng.choice(sorted(NODES))
    model = copy.deepcopy(MODEL)
    ruleset, shared = render_counted(model, node)
    rendered_alone = 0
    for _step in range(6):
        new = changed(model, lambda services: random_change(rng, {"services": services}))
        updated = render_update(ruleset, shared, *differing(model, new), new, node)
        whole = render_counted(new, node)
        if updated is not None:
            assert updated == whole
            rendered_alone += 1
        ruleset, shared = whole
        model = new
    assert rendered_alone >= 4  # only a change of affinity timeouts is rendered whole
