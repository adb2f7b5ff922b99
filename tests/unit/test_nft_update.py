"""common/nft_update: a table's content split into its objects, and the one transaction of
what changed between two contents. Pure: tests/lab/test_nft_glance_update.py checks in the
kernel that an update leaves the table a whole load gives."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft_update import (
    ELEMENTS_PER_STATEMENT,
    REFILL_MAX,
    parse_table,
    table_record,
    update_script,
)

from tests.unit.test_policy_render import TWO_RULES, many_pods, model_of, render_table

TABLE = """table ip t {
\tflags dormant
\tset s {
\t\ttypeof ip saddr
\t\tflags interval
\t\telements = { 10.0.0.0/8,
\t\t\t     192.168.0.0/16 }  # a comment { with braces }
\t}
\tmap m { typeof ip daddr : verdict; elements = { 10.1.1.1 : goto x, 10.1.1.2 : drop }; }
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr @s jump x comment "a; b { c }"
\t}
\tchain x { counter drop; }
}
add element ip t s { 172.16.0.0/12 }
"""


def test_a_table_is_split_into_its_objects():
    objects = parse_table("ip", "t", TABLE)
    assert objects["head"] == ["flags dormant"]
    assert objects["sets"] == {
        "s": {"kind": "set", "spec": ["typeof ip saddr", "flags interval"],
              "elements": ["10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12"]},
        "m": {"kind": "map", "spec": ["typeof ip daddr : verdict"],
              "elements": ["10.1.1.1 : goto x", "10.1.1.2 : drop"]},
    }
    assert list(objects["chains"]) == ["forward", "x"]
    assert 'comment "a; b { c }"' in objects["chains"]["forward"]


@pytest.mark.parametrize(("content", "why"), [
    ("table ip other { chain x { drop; } }", "another table"),
    ("table ip t { flowtable f { hook ingress priority 0; devices = { lo }; } }", "a flowtable"),
    ("table ip t { chain x { drop; } }\nadd rule ip t x accept", "a statement after the table"),
    ("table ip t { chain x { drop; } }\nadd element ip t s { 1.2.3.4 }", "elements of no declared set"),
    ("table ip t { chain x { drop; }\n\tchain x { accept; } }", "a chain declared twice"),
    ("table ip t { chain x { drop; }", "a brace never closed"),
])
def test_a_shape_it_does_not_split_is_loaded_whole(content, why):
    assert parse_table("ip", "t", content) is None, why


def test_a_policy_table_round_trips_its_sets_also_those_sent_in_several_statements():
    text = render_table(model_of(TWO_RULES, pods=many_pods(1600)), "node1")
    objects = parse_table("ip", "podnet-policy", text)
    assert len(objects["sets"]["p_x_p_pods"]["elements"]) == 534 > 500
    assert set(objects["chains"]) == {"forward", "input", "pod_egress", "pod_ingress"}
    assert update_script("ip", "podnet-policy", table_record(objects), objects) == ("", {
        "chains_changed": 0, "chains_added": 0, "chains_deleted": 0, "sets_added": 0, "sets_deleted": 0,
        "elements": 0})


def test_the_update_sends_only_what_changed_rules_first_elements_last():
    old = table_record(parse_table("ip", "t", TABLE))
    new = parse_table("ip", "t", TABLE.replace("192.168.0.0/16", "192.168.0.0/17")
                      .replace("\tchain x { counter drop; }", "\tchain y { accept; }")
                      .replace("jump x", "jump y").replace("goto x", "goto y"))
    script, summary = update_script("ip", "t", old, new)
    assert script == (
        "flush chain ip t forward\n"
        "flush chain ip t x\n"
        "flush set ip t s\n"
        "flush map ip t m\n"
        "delete chain ip t x\n"
        "table ip t {\n"
        "\tchain y { accept; }\n"
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        '\t\tip saddr @s jump y comment "a; b { c }"\n\t}\n'
        "}\n"
        "add set ip t s { typeof ip saddr; flags interval; elements = { 10.0.0.0/8, 192.168.0.0/17, "
        "172.16.0.0/12 } }\n"
        "add map ip t m { typeof ip daddr : verdict; elements = { 10.1.1.1 : goto y, 10.1.1.2 : drop } }\n")
    assert summary == {"chains_changed": 1, "chains_added": 1, "chains_deleted": 1, "sets_added": 0,
                       "sets_deleted": 0, "elements": 4}


@pytest.mark.parametrize(("old", "new", "why"), [
    ("flags interval", "flags interval, timeout", "a set's flags"),
    ("typeof ip saddr", "typeof ip daddr", "a set's type"),
    ("flags dormant", "comment \"mine\"", "a table property"),
])
def test_what_nft_cannot_change_in_place_is_loaded_whole(old, new, why):
    recorded = table_record(parse_table("ip", "t", TABLE))
    assert update_script("ip", "t", recorded, parse_table("ip", "t", TABLE.replace(old, new))) is None, why


def test_no_record_or_an_unsplit_content_is_loaded_whole():
    objects = parse_table("ip", "t", TABLE)
    assert update_script("ip", "t", None, objects) is None
    assert update_script("ip", "t", table_record(objects), None) is None


def big(count):
    """A table whose one set holds `count` addresses."""
    elements = ", ".join("10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255) for i in range(count))
    return "table ip t {\n\tset s {\n\t\ttypeof ip saddr\n\t\telements = { %s }\n\t}\n}\n" % elements


def test_a_set_that_only_gains_elements_is_declared_again_with_them():
    """Nothing flushed, no `add element` (before which nft reads every interval set)."""
    old, new = big(3), big(3).replace("10.0.0.2 }", "10.0.0.2, 192.0.2.1 }")
    script, summary = update_script("ip", "t", table_record(parse_table("ip", "t", old)),
                                    parse_table("ip", "t", new))
    assert script == "add set ip t s { typeof ip saddr; elements = { 192.0.2.1 } }\n"
    assert summary["elements"] == 1


def test_a_set_some_elements_left_is_refilled_up_to_refill_max_then_they_are_deleted():
    """Up to REFILL_MAX elements, the set is flushed and declared again with all it holds, in
    as many statements as nft takes; past it, the ones that left are deleted one by one."""
    for count, refilled in ((REFILL_MAX + 1, True), (REFILL_MAX + 2, False)):
        old, new = big(count), big(count).replace(" 10.0.0.0,", "")
        script, summary = update_script("ip", "t", table_record(parse_table("ip", "t", old)),
                                        parse_table("ip", "t", new))
        lines = script.splitlines()
        assert summary["elements"] == 1
        if refilled:
            assert lines[0] == "flush set ip t s"
            assert len(lines) == 1 + -(-REFILL_MAX // ELEMENTS_PER_STATEMENT)
            head = "add set ip t s { typeof ip saddr; elements = { "
            assert all(line.startswith(head) for line in lines[1:])
            assert sum(line.count(",") + 1 for line in lines[1:]) == REFILL_MAX
            assert "10.0.0.0" not in script
        else:
            assert lines == ["delete element ip t s { 10.0.0.0 }"]
