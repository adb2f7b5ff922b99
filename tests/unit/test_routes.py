"""The pure core of podnet.network.routes: validation and the add/replace/delete plan."""

import ipaddress

import pytest
from ansible_collections.podnet.network.plugins.module_utils.pod_network.routes import (
    Route,
    RouteError,
    final_routes,
    parse_routes,
    plan_routes,
    render_routes,
    route_line,
)

PROTO = 158


def route(dest, gateway, proto=PROTO, table=254, priority=0, dev=None, kind=1):
    return Route(
        dest=ipaddress.IPv4Network(dest),
        gateway=ipaddress.IPv4Address(gateway) if gateway else None,
        proto=proto,
        table=table,
        priority=priority,
        dev=dev,
        kind=kind,
    )


def lines(routes):
    return [route_line(r) for r in routes]


# --- validation -------------------------------------------------------------------------------


def test_parse_normalises_and_sorts():
    routes = parse_routes(
        [
            {"dest": "10.244.10.0/24", "gateway": "192.168.56.20"},
            {"dest": "10.244.2.0/24", "gateway": "192.168.56.12"},
        ]
    )
    assert lines(routes) == [
        "10.244.2.0/24 via 192.168.56.12 proto 158",
        "10.244.10.0/24 via 192.168.56.20 proto 158",
    ]


def test_parse_empty_list_is_valid():
    assert parse_routes([]) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"dest": "10.244.2.1/24", "gateway": "192.168.56.12"}], r"routes\[0\]\.dest: .*host bits set"),
        ([{"dest": "fd00::/64", "gateway": "192.168.56.12"}], r"routes\[0\]\.dest: .*not an IPv4 network"),
        ([{"dest": "10.244.2.0/33", "gateway": "192.168.56.12"}], r"routes\[0\]\.dest"),
        ([{"dest": "10.244.2.0/24", "gateway": "192.168.56.300"}], r"routes\[0\]\.gateway: .*not an IPv4"),
        ([{"dest": "10.244.2.0/24", "gateway": "10.0.0.0/8"}], r"routes\[0\]\.gateway"),
        ([{"dest": "10.244.2.0/24"}], r"routes\[0\]\.gateway: missing"),
        ([{"gateway": "192.168.56.12"}], r"routes\[0\]\.dest: missing"),
        ([{"dest": "10.244.2.0/24", "gateway": "192.168.56.12", "via": "eth0"}], r"routes\[0\]: unknown"),
        ([{"dest": "10.244.2.0/24", "gateway": "10.244.2.0", "onlink": True}],
         r"routes\[0\]\.onlink: .*needs its dev"),
        (["10.244.2.0/24"], r"routes\[0\]: expected a mapping"),
        (
            [
                {"dest": "10.244.2.0/24", "gateway": "192.168.56.12"},
                {"dest": "10.244.3.0/24", "gateway": "192.168.56.13"},
                {"dest": "10.244.2.0/24", "gateway": "192.168.56.14"},
            ],
            r"routes\[2\]\.dest: 10.244.2.0/24 is already listed at routes\[0\]",
        ),
    ],
)
def test_parse_rejects(raw, message):
    with pytest.raises(RouteError, match=message):
        parse_routes(raw)


@pytest.mark.parametrize(("protocol", "table"), [(0, 254), (256, 254), (158, 0)])
def test_parse_rejects_bad_protocol_or_table(protocol, table):
    with pytest.raises(RouteError):
        parse_routes([], protocol=protocol, table=table)


# --- plan -------------------------------------------------------------------------------------

DESIRED = [route("10.244.2.0/24", "192.168.56.12"), route("10.244.3.0/24", "192.168.56.13")]


def test_plan_adds_missing_routes():
    plan = plan_routes(DESIRED, [], [])
    assert lines(plan.add) == lines(DESIRED)
    assert plan.replace == [] and plan.delete == []
    assert plan.changed


def test_plan_is_empty_when_live_matches():
    live = [route("10.244.3.0/24", "192.168.56.13", dev="eth1"), route("10.244.2.0/24", "192.168.56.12")]
    plan = plan_routes(DESIRED, live, [])
    assert not plan.changed


def test_plan_replaces_changed_gateway():
    live = [route("10.244.2.0/24", "192.168.56.99"), route("10.244.3.0/24", "192.168.56.13")]
    plan = plan_routes(DESIRED, live, [])
    assert [(route_line(old), route_line(new)) for old, new in plan.replace] == [
        ("10.244.2.0/24 via 192.168.56.99 proto 158", "10.244.2.0/24 via 192.168.56.12 proto 158")
    ]
    assert plan.add == [] and plan.delete == []


def test_plan_replaces_owned_blackhole_at_desired_dest():
    live = [route("10.244.2.0/24", None, kind=6), route("10.244.3.0/24", "192.168.56.13")]
    plan = plan_routes(DESIRED, live, [])
    assert [route_line(new) for _, new in plan.replace] == ["10.244.2.0/24 via 192.168.56.12 proto 158"]


def test_plan_deletes_owned_routes_no_longer_listed():
    live = DESIRED + [route("10.244.9.0/24", "192.168.56.19")]
    plan = plan_routes(DESIRED, live, [])
    assert lines(plan.delete) == ["10.244.9.0/24 via 192.168.56.19 proto 158"]
    assert plan.add == [] and plan.replace == []


def test_plan_empty_desired_deletes_every_owned_route():
    plan = plan_routes([], DESIRED, [route("10.99.0.0/16", "192.168.56.1", proto=4)])
    assert lines(plan.delete) == lines(DESIRED)


def test_plan_never_touches_foreign_routes():
    foreign = [
        route("10.99.0.0/16", "192.168.56.1", proto=4),
        route("0.0.0.0/0", "192.168.56.1", proto=3),
        route("192.168.56.0/24", None, proto=2, dev="eth1"),
    ]
    plan = plan_routes(DESIRED, [], foreign)
    touched = plan.add + plan.delete + [r for pair in plan.replace for r in pair]
    assert all(r.proto == PROTO for r in touched)
    assert lines(plan.add) == lines(DESIRED)


def test_plan_refuses_foreign_route_at_desired_dest():
    foreign = [route("10.244.3.0/24", "192.168.56.50", proto=4, dev="eth1")]
    with pytest.raises(RouteError) as err:
        plan_routes(DESIRED, [], foreign)
    message = str(err.value)
    assert "10.244.3.0/24" in message
    assert "via 192.168.56.50" in message and "dev eth1" in message and "proto static" in message


def test_plan_allows_foreign_route_at_desired_dest_with_a_metric():
    foreign = [route("10.244.3.0/24", "192.168.56.50", proto=4, priority=100)]
    plan = plan_routes(DESIRED, [], foreign)
    assert lines(plan.add) == lines(DESIRED)


def test_plan_ignores_foreign_route_in_other_table():
    foreign = [route("10.244.3.0/24", "192.168.56.50", proto=4, table=100)]
    assert lines(plan_routes(DESIRED, [], foreign).add) == lines(DESIRED)


def test_plan_drops_owned_duplicates_with_a_metric():
    live = DESIRED + [route("10.244.2.0/24", "192.168.56.12", priority=50)]
    plan = plan_routes(DESIRED, live, [])
    assert lines(plan.delete) == ["10.244.2.0/24 via 192.168.56.12 proto 158 metric 50"]
    assert plan.add == [] and plan.replace == []


def test_plan_adds_when_only_an_owned_route_with_a_metric_exists():
    live = [route("10.244.2.0/24", "192.168.56.12", priority=50), route("10.244.3.0/24", "192.168.56.13")]
    plan = plan_routes(DESIRED, live, [])
    assert lines(plan.delete) == ["10.244.2.0/24 via 192.168.56.12 proto 158 metric 50"]
    assert lines(plan.add) == ["10.244.2.0/24 via 192.168.56.12 proto 158"]


def test_final_routes_and_render():
    live = [route("10.244.2.0/24", "192.168.56.99"), route("10.244.9.0/24", "192.168.56.19")]
    plan = plan_routes(DESIRED, live, [])
    assert lines(final_routes(plan, live)) == lines(DESIRED)
    assert render_routes(live) == (
        "10.244.2.0/24 via 192.168.56.99 proto 158\n10.244.9.0/24 via 192.168.56.19 proto 158\n"
    )
    assert render_routes([]) == ""


def test_line_shows_non_main_table():
    assert route_line(route("10.244.2.0/24", "192.168.56.12", table=1000)) == (
        "10.244.2.0/24 via 192.168.56.12 proto 158 table 1000"
    )
