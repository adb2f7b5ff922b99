"""What on a node would drop cluster traffic, and what podnet adds so it passes.

Pure: a ruleset as `nft -j list ruleset` prints it in, findings and a plan out.

Netfilter runs every base chain of a hook, table after table, and a packet passes only
if none of them drops it: an accept in podnet's own table cannot override a drop policy
in another. So, as kube-proxy (KUBE-FORWARD) and flannel (FLANNEL-FWD) do, podnet puts
its accept rules where the drop would happen:

- an iptables filter table (iptables-nft, so Docker's and ufw's rules are nft tables too):
  a podnet-owned chain, PODNET-FORWARD / PODNET-INPUT, jumped from DOCKER-USER when
  Docker's chain exists (Docker's FORWARD jumps there first and leaves it to the admin),
  else from the top of FORWARD / INPUT. Written with iptables, never nft: a native nft
  rule in an iptables-nft table makes iptables refuse to list or change the table;
- a native nftables base chain (e.g. `inet filter` of /etc/nftables.conf): a podnet-owned
  regular chain `podnet_accept_<hook>` in that table, jumped from the top of the base
  chain. An accept there ends that base chain only, so later tables (podnet's own
  NetworkPolicy table included) still decide.

What passes is what kube-proxy and flannel let through: anything from or to the cluster
CIDR on the forward hook (pod to pod across br_netfilter, NodePorts after DNAT, egress),
and on the input hook anything from the cluster CIDR or to the service range (pods
asking the node's cluster DNS address).
"""

# The hooks where a drop stops cluster traffic (output is the node's own traffic).
HOOKS = ("forward", "input")
IPTABLES_TABLES = frozenset(("filter",))
IPTABLES_BASE = {"forward": "FORWARD", "input": "INPUT"}
IPTABLES_CHAIN = {"forward": "PODNET-FORWARD", "input": "PODNET-INPUT"}
DOCKER_USER = "DOCKER-USER"
NFT_CHAIN = "podnet_accept_{hook}"
COMMENT = "podnet: cluster traffic"
OWN_TABLE_PREFIX = "podnet"


def _objects(ruleset):
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            yield from item.items()


def is_iptables_table(family, table, chains):
    """iptables-nft's tables: ip/ip6 `filter` with iptables' upper-case built-in chains."""
    return (family in ("ip", "ip6") and table in IPTABLES_TABLES
            and any(name in chains for name in IPTABLES_BASE.values()))


def _jumps(rule):
    """The chain a rule jumps to or goes to, if that is all it does."""
    for expr in rule.get("expr", []):
        for verdict in ("jump", "goto"):
            if isinstance(expr, dict) and verdict in expr:
                return expr[verdict].get("target")
    return None


def read_ruleset(ruleset):
    """{(family, table): {"chains": {name: chain}, "rules": {chain: [rule, ...]}}}"""
    tables = {}
    for kind, obj in _objects(ruleset):
        if kind == "table":
            tables.setdefault((obj["family"], obj["name"]), {"chains": {}, "rules": {}})
        elif kind == "chain":
            table = tables.setdefault((obj["family"], obj["table"]), {"chains": {}, "rules": {}})
            table["chains"][obj["name"]] = obj
        elif kind == "rule":
            table = tables.setdefault((obj["family"], obj["table"]), {"chains": {}, "rules": {}})
            table["rules"].setdefault(obj["chain"], []).append(obj)
    return tables


def findings(ruleset):
    """Every base chain on a forward or input hook (IPv4-capable families) that drops by
    policy, with the way podnet makes cluster traffic pass it. Also names Docker and ufw
    when their chains are there. podnet's own tables (named podnet*) decide by podnet's rules
    and are never a finding."""
    found = []
    for (family, table), content in sorted(read_ruleset(ruleset).items()):
        if family not in ("ip", "inet") or table.startswith(OWN_TABLE_PREFIX):
            continue
        chains = content["chains"]
        iptables = is_iptables_table(family, table, chains)
        for name, chain in sorted(chains.items()):
            hook = chain.get("hook")
            if chain.get("type") != "filter" or hook not in HOOKS or chain.get("policy") != "drop":
                continue
            finding = {"family": family, "table": table, "chain": name, "hook": hook, "policy": "drop",
                       "kind": "iptables" if iptables else "nftables"}
            if iptables:
                via = DOCKER_USER if hook == "forward" and DOCKER_USER in chains else IPTABLES_BASE[hook]
                finding.update(own_chain=IPTABLES_CHAIN[hook], jump_from=via)
                finding["by"] = ("Docker" if DOCKER_USER in chains
                                 else "ufw" if any(c.startswith("ufw-") for c in chains) else "iptables")
            else:
                finding.update(own_chain=NFT_CHAIN.format(hook=hook), jump_from=name, by="nftables")
            found.append(finding)
    return found


def describe(finding):
    """One line for the plan's report."""
    where = f"{finding['family']} {finding['table']} {finding['chain']}"
    return (f"{finding['by']}: {where} ({finding['hook']} hook) drops by policy; podnet accepts cluster "
            f"traffic in its chain {finding['own_chain']}, jumped from the top of {finding['jump_from']}")


def accept_matches(hook, cluster_cidr, service_cidr, vxlan_peers=(), vxlan_port=8472):
    """(iptables match, nft match) pairs: what passes at this hook. Forward: from or to the
    cluster CIDR. Input: from the cluster CIDR, to the Service range, and VXLAN from the
    nodes that reach this one over it (those peers only, on podnet's VXLAN port)."""
    if hook == "forward":
        return [("-s %s" % cluster_cidr, "ip saddr %s" % cluster_cidr),
                ("-d %s" % cluster_cidr, "ip daddr %s" % cluster_cidr)]
    return ([("-s %s" % cluster_cidr, "ip saddr %s" % cluster_cidr),
             ("-d %s" % service_cidr, "ip daddr %s" % service_cidr)]
            # iptables -S prints a host address as /32: written so, the listing compares equal.
            + [("-s %s/32 -p udp -m udp --dport %d" % (peer, vxlan_port),
                "ip saddr %s udp dport %d" % (peer, vxlan_port)) for peer in sorted(vxlan_peers)])


def iptables_restore_script(hooks, cluster_cidr, service_cidr, vxlan_peers=(), vxlan_port=8472):
    """An iptables-restore --noflush script (re)writing podnet's own chains only: declaring
    a chain flushes it, so the script is the whole content of those chains."""
    lines = ["*filter"]
    lines += [f":{IPTABLES_CHAIN[hook]} - [0:0]" for hook in hooks]
    for hook in hooks:
        for match, _nft in accept_matches(hook, cluster_cidr, service_cidr, vxlan_peers, vxlan_port):
            lines.append(f'-A {IPTABLES_CHAIN[hook]} {match} -m comment --comment "{COMMENT}" -j ACCEPT')
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def nft_chain_script(family, table, hook, cluster_cidr, service_cidr, vxlan_peers=(), vxlan_port=8472):
    """(Re)write podnet's regular chain in a foreign table: add + flush + rules, one transaction."""
    chain = NFT_CHAIN.format(hook=hook)
    lines = [f"add chain {family} {table} {chain}", f"flush chain {family} {table} {chain}"]
    for _iptables, match in accept_matches(hook, cluster_cidr, service_cidr, vxlan_peers, vxlan_port):
        lines.append(f'add rule {family} {table} {chain} {match} accept comment "{COMMENT}"')
    return "\n".join(lines) + "\n"


def nft_jump_handles(ruleset, family, table, chain, target):
    """Handles of the rules in a chain that jump to `target` (podnet's jump), in order."""
    content = read_ruleset(ruleset).get((family, table), {"rules": {}})
    return [rule["handle"] for rule in content["rules"].get(chain, []) if _jumps(rule) == target]


def nft_first_rule_jumps(ruleset, family, table, chain, target):
    """Whether the chain's first rule is podnet's jump (so nothing before it can drop)."""
    rules = read_ruleset(ruleset).get((family, table), {"rules": {}})["rules"].get(chain, [])
    return bool(rules) and _jumps(rules[0]) == target
