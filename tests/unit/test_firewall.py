"""What on a node would drop cluster traffic, and where podnet's accept rules go.

Rulesets are written as `nft -j list ruleset` prints them (iptables-nft's tables included).
"""

from ansible_collections.podnet.network.plugins.module_utils.firewall.detect import (
    describe,
    findings,
    iptables_restore_script,
    nft_chain_script,
    nft_jump_handles,
)


def table(family, name):
    return {"table": {"family": family, "name": name, "handle": 1}}


def base(family, tbl, name, hook, policy, kind="filter"):
    return {"chain": {"family": family, "table": tbl, "name": name, "handle": 2, "type": kind,
                      "hook": hook, "prio": 0, "policy": policy}}


def chain(family, tbl, name):
    return {"chain": {"family": family, "table": tbl, "name": name, "handle": 3}}


def jump(family, tbl, name, target, handle):
    return {"rule": {"family": family, "table": tbl, "chain": name, "handle": handle,
                     "expr": [{"jump": {"target": target}}]}}


def ruleset(*objects):
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *objects]}


DOCKER = ruleset(
    table("ip", "filter"),
    base("ip", "filter", "INPUT", "input", "accept"),
    base("ip", "filter", "FORWARD", "forward", "drop"),
    base("ip", "filter", "OUTPUT", "output", "accept"),
    chain("ip", "filter", "DOCKER-USER"),
    jump("ip", "filter", "FORWARD", "DOCKER-USER", 10),
)
UFW = ruleset(
    table("ip", "filter"),
    base("ip", "filter", "INPUT", "input", "drop"),
    base("ip", "filter", "FORWARD", "forward", "drop"),
    base("ip", "filter", "OUTPUT", "output", "accept"),
    chain("ip", "filter", "ufw-before-input"),
)
NFTABLES = ruleset(
    table("inet", "filter"),
    base("inet", "filter", "input", "input", "drop"),
    base("inet", "filter", "forward", "forward", "drop"),
    base("inet", "filter", "output", "output", "drop"),
)


def rows(found):
    return [(f["by"], f["family"], f["table"], f["chain"], f["kind"], f["own_chain"], f["jump_from"])
            for f in found]


def test_docker_forward_drop_is_passed_through_docker_user():
    assert rows(findings(DOCKER)) == [
        ("Docker", "ip", "filter", "FORWARD", "iptables", "PODNET-FORWARD", "DOCKER-USER")]


def test_ufw_input_and_forward_are_jumped_from_the_built_in_chains():
    assert rows(findings(UFW)) == [
        ("ufw", "ip", "filter", "FORWARD", "iptables", "PODNET-FORWARD", "FORWARD"),
        ("ufw", "ip", "filter", "INPUT", "iptables", "PODNET-INPUT", "INPUT"),
    ]


def test_a_dropping_nft_table_gets_podnet_chains_in_that_table_output_left_alone():
    assert rows(findings(NFTABLES)) == [
        ("nftables", "inet", "filter", "forward", "nftables", "podnet_accept_forward", "forward"),
        ("nftables", "inet", "filter", "input", "nftables", "podnet_accept_input", "input"),
    ]


def test_accepting_chains_nat_chains_ipv6_and_podnets_own_tables_are_no_finding():
    quiet = ruleset(
        table("ip", "filter"), base("ip", "filter", "FORWARD", "forward", "accept"),
        table("ip", "nat"), base("ip", "nat", "PREROUTING", "prerouting", "drop", kind="nat"),
        table("ip6", "filter"), base("ip6", "filter", "FORWARD", "forward", "drop"),
        table("ip", "podnet-policy"), base("ip", "podnet-policy", "forward", "forward", "drop"),
    )
    assert findings(quiet) == []


def test_any_table_name_and_the_ip_family_count_not_only_inet_filter():
    custom = ruleset(table("ip", "fw"), base("ip", "fw", "fwd", "forward", "drop"))
    assert rows(findings(custom)) == [
        ("nftables", "ip", "fw", "fwd", "nftables", "podnet_accept_forward", "fwd")]


def test_the_report_names_the_chain_and_the_remedy():
    line = describe(findings(DOCKER)[0])
    assert "ip filter FORWARD" in line and "PODNET-FORWARD" in line and "DOCKER-USER" in line


def test_iptables_script_declares_only_podnets_chains():
    script = iptables_restore_script(["forward", "input"], "10.244.0.0/16", "10.96.0.0/12")
    assert script.splitlines() == [
        "*filter",
        ":PODNET-FORWARD - [0:0]",
        ":PODNET-INPUT - [0:0]",
        '-A PODNET-FORWARD -s 10.244.0.0/16 -m comment --comment "podnet: cluster traffic" -j ACCEPT',
        '-A PODNET-FORWARD -d 10.244.0.0/16 -m comment --comment "podnet: cluster traffic" -j ACCEPT',
        '-A PODNET-INPUT -s 10.244.0.0/16 -m comment --comment "podnet: cluster traffic" -j ACCEPT',
        '-A PODNET-INPUT -d 10.96.0.0/12 -m comment --comment "podnet: cluster traffic" -j ACCEPT',
        "COMMIT",
    ]


def test_nft_script_touches_only_podnets_chain_in_the_foreign_table():
    script = nft_chain_script("inet", "filter", "input", "10.244.0.0/16", "10.96.0.0/12")
    assert all(" inet filter podnet_accept_input" in line for line in script.splitlines())
    assert "ip daddr 10.96.0.0/12 accept" in script


def test_vxlan_passes_input_from_the_vxlan_peers_only_on_its_port():
    script = iptables_restore_script(["forward", "input"], "10.244.0.0/16", "10.96.0.0/12",
                                     vxlan_peers=["192.168.57.14"], vxlan_port=8472)
    assert [line for line in script.splitlines() if "8472" in line] == [
        '-A PODNET-INPUT -s 192.168.57.14/32 -p udp -m udp --dport 8472 -m comment --comment '
        '"podnet: cluster traffic" -j ACCEPT']
    nft = nft_chain_script("inet", "filter", "input", "10.244.0.0/16", "10.96.0.0/12",
                           vxlan_peers=["192.168.57.14", "192.168.56.11"], vxlan_port=4789)
    assert [line.split("podnet_accept_input ")[1] for line in nft.splitlines() if "udp" in line] == [
        'ip saddr 192.168.56.11 udp dport 4789 accept comment "podnet: cluster traffic"',
        'ip saddr 192.168.57.14 udp dport 4789 accept comment "podnet: cluster traffic"']
    forward = nft_chain_script("inet", "filter", "forward", "10.244.0.0/16", "10.96.0.0/12",
                               vxlan_peers=["192.168.57.14"])
    assert "udp" not in forward


def test_jump_handles_find_podnets_jumps_only():
    live = ruleset(*NFTABLES["nftables"][1:],
                   jump("inet", "filter", "input", "podnet_accept_input", 7),
                   jump("inet", "filter", "input", "someone_else", 8))
    assert nft_jump_handles(live, "inet", "filter", "input", "podnet_accept_input") == [7]


def test_a_node_without_nft_yet_has_nothing_read_and_the_report_says_so(monkeypatch, tmp_path):
    """The plan reads the firewall before podnet's packages are on a fresh node."""
    from ansible_collections.podnet.network.plugins.module_utils.firewall import apply
    monkeypatch.setattr(apply.shutil, "which", lambda name: None)
    monkeypatch.setattr(apply, "_run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran %s" % (a,))))
    result = apply.ensure("10.244.0.0/16", "10.96.0.0/12", str(tmp_path / "firewall.json"), check=True)
    assert result["findings"] == [] and result["actions"] == []
    assert result["report"] == ["firewall not read: nft is not installed yet (the node play reads it after "
                                "installing podnet's packages)"]
