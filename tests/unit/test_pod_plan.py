"""The pod plan as a table: declared pods, recorded states and live health in, one action per pod out."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.pods.plan import desired_spec, plan_pods
from ansible_collections.podnet.network.plugins.module_utils.pods.resolv import render_resolv_conf

NET = "digest-1"
PREFIX = "podnet-"
DNS = ("10.96.0.10", "cluster.local", "/etc/netns")
KEY = "default/web-0"


def pod(**change):
    out = {"name": "web-0", "namespace": "default", "labels": {"app": "web"},
           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}
    out.update(change)
    return out


def recorded(dns=None, network=NET, **change):
    """The state a run with this pod, network and DNS setting would have recorded."""
    spec = desired_spec(pod(), network, PREFIX, dns)
    state = {k: spec[k] for k in ("name", "namespace", "labels", "ports", "netns", "container_id",
                                  "spec_hash")}
    state.update(ip="10.244.1.2", pid=42)
    if dns:
        state.update(resolv_conf=spec["resolv_conf"], netns_etc_dir=dns[2])
    state.update(change)
    return state


RESOLV = render_resolv_conf("10.96.0.10", "default", "cluster.local")
UP = (True, "running")
DOWN = (False, "netns podnet-default-web-0 is missing")

# (case, desired pods, states, health, network digest, dns, live resolv.conf, want action, want reason)
ROWS = [
    ("new pod", [pod()], {}, {}, NET, None, {}, "create", "not recorded"),
    ("running and unchanged", [pod()], {KEY: recorded()}, {KEY: UP}, NET, None, {}, "ok", "running"),
    ("netns gone (a reboot)", [pod()], {KEY: recorded()}, {KEY: DOWN}, NET, None, {}, "create",
     DOWN[1]),
    ("no health read", [pod()], {KEY: recorded()}, {}, NET, None, {}, "create", "health unknown"),
    ("port number changed", [pod(ports=[{"name": "http", "containerPort": 9090, "protocol": "TCP"}])],
     {KEY: recorded()}, {KEY: UP}, NET, None, {}, "create", "spec or network config changed"),
    ("network config changed", [pod()], {KEY: recorded()}, {KEY: UP}, "digest-2", None, {}, "create",
     "spec or network config changed"),
    ("conflist not readable (check mode)", [pod()], {KEY: recorded()}, {KEY: UP}, None, None, {},
     "create", "CNI conflist not readable yet"),
    ("netns renamed", [pod()], {KEY: recorded(netns="old-default-web-0")}, {KEY: UP}, NET, None, {},
     "create", "netns name changed"),
    ("labels changed: rewritten in place", [pod(labels={"app": "web", "tier": "1"})],
     {KEY: recorded()}, {KEY: UP}, NET, None, {}, "update", "running"),
    ("port renamed: rewritten in place",
     [pod(ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}])],
     {KEY: recorded()}, {KEY: UP}, NET, None, {}, "update", "running"),
    ("resolv.conf as wanted", [pod()], {KEY: recorded(DNS)}, {KEY: UP}, NET, DNS, {KEY: RESOLV},
     "ok", "running"),
    ("resolv.conf edited on the node", [pod()], {KEY: recorded(DNS)}, {KEY: UP}, NET, DNS,
     {KEY: "nameserver 1.1.1.1\n"}, "update", "running"),
    ("resolv.conf gone from the node", [pod()], {KEY: recorded(DNS)}, {KEY: UP}, NET, DNS, {KEY: None},
     "update", "running"),
    ("DNS turned on for a running pod", [pod()], {KEY: recorded()}, {KEY: UP}, NET, DNS, {KEY: None},
     "update", "running"),
]


@pytest.mark.parametrize("case, desired, states, health, digest, dns, live, action, reason", ROWS,
                         ids=[row[0] for row in ROWS])
def test_plan_table(case, desired, states, health, digest, dns, live, action, reason):
    actions, removals = plan_pods(desired, states, health, digest, PREFIX, dns, live)
    assert [(a[0], a[1], a[4]) for a in actions] == [(action, KEY, reason)], case
    assert removals == []
    spec = actions[0][2]
    assert spec["netns"] == "podnet-default-web-0" and spec["container_id"] == "podnet-default-web-0"
    assert actions[0][3] is states.get(KEY)
    assert ("resolv_conf" in spec) == bool(dns)


def test_undeclared_pods_go_and_order_follows_the_declaration():
    other = recorded(name="db-0", namespace="data")
    states = {KEY: recorded(), "data/db-0": other}
    desired = [pod(name="web-1"), pod()]
    actions, removals = plan_pods(desired, states, {KEY: UP, "data/db-0": UP}, NET, PREFIX)
    assert [(a[0], a[1]) for a in actions] == [("create", "default/web-1"), ("ok", KEY)]
    assert removals == [("data/db-0", other)]


def test_nothing_declared_removes_everything_recorded():
    states = {KEY: recorded()}
    assert plan_pods([], states, {}, NET, PREFIX) == ([], [(KEY, states[KEY])])


def test_the_plan_reads_nothing_but_its_inputs(monkeypatch):
    # A pure function: no /proc, no netns, no files, whatever the pod looks like.
    import builtins
    import os

    def refuse(*args, **kwargs):
        raise AssertionError("the plan touched the node")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(os, "stat", refuse)
    monkeypatch.setattr(os.path, "ismount", refuse)
    actions, _ = plan_pods([pod()], {KEY: recorded(DNS)}, {KEY: UP}, NET, PREFIX, DNS, {KEY: RESOLV})
    assert actions[0][0] == "ok"
