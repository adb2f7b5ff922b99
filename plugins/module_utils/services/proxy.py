"""What both Service proxy backends share: a reviewer's view of the Services, its diff, and
the conntrack entries to clear when endpoints go away.

Pure: the modules record the view they applied (read back with podnet_nft.parse_state),
pass the old and new views in, and run the conntrack commands this returns.
"""

import ipaddress

from ansible_collections.podnet.network.plugins.module_utils.services.categorize import proxied

# The protocols whose conntrack entries outlive an endpoint: no connection end tells the kernel
# a flow is over (kube-proxy's conntrack.IsClearConntrackNeeded: UDP and SCTP).
CLEARED = ("UDP", "SCTP")


def _delete(protocol):
    return ("-D", "-p", protocol.lower())


def service_view(model):
    """{"ns/name:port/PROTO": {...}}: each Service port's frontends and ready endpoints.

    This is what a reviewer wants to see change in a diff, and what the conntrack cleanup
    compares. Headless and ExternalName Services have no NAT, so no entry.
    """
    view = {}
    for svc in model.get("services", []):
        if not proxied(svc):
            continue
        for port in svc["ports"]:
            name = f"{svc['namespace']}/{svc['name']}:{port['name'] or port['port']}/{port['protocol']}"
            view[name] = {
                "protocol": port["protocol"],
                "port": port["port"],
                "addresses": [svc["cluster_ip"], *(svc.get("external_ips") or [])],
                "node_port": port.get("node_port"),
                "endpoints": [f"{ep['ip']}:{ep['port']}" for ep in port.get("endpoints") or []],
            }
    return view


def _describe(name, entry):
    frontends = [f"{address}:{entry['port']}" for address in entry["addresses"]]
    if entry.get("node_port"):
        frontends.append(f"nodePort {entry['node_port']}")
    endpoints = ", ".join(entry["endpoints"]) or "no endpoints (REJECT)"
    return f"{name} {' '.join(frontends)} -> {endpoints}\n"


def view_diff(old, new):
    """(before, after, changed names): only the Service ports that changed, one line each."""
    old = old or {}
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    before = "".join(_describe(name, old[name]) for name in changed if name in old)
    after = "".join(_describe(name, new[name]) for name in changed if name in new)
    return before, after, changed


def udp_flows_to_clear(old, new):
    """conntrack -D argument lists for UDP and SCTP flows that would otherwise stick to the past.

    Neither has a connection end conntrack trusts, so an entry outlives its endpoint and the
    client keeps sending into the void until the entry expires (kube-proxy clears them too):
    - flows DNATed to an endpoint that no longer serves that Service port;
    - flows to a Service port that had no endpoints (or did not exist), to its addresses and
      to its nodePort: they were created un-NATed, and would keep bypassing the DNAT now that
      endpoints exist.
    """
    old = old or {}
    commands = []
    for name, entry in sorted(old.items()):
        if entry["protocol"] not in CLEARED:
            continue
        delete = _delete(entry["protocol"])
        current = new.get(name)
        still = set(current["endpoints"]) if current else set()
        gone = [ep for ep in entry["endpoints"] if ep not in still]
        for endpoint in gone:
            nat = ["--dst-nat", endpoint.rsplit(":", 1)[0]]
            for address in entry["addresses"]:
                commands.append([*delete, "--orig-dst", address, "--orig-port-dst", str(entry["port"]), *nat])
            if entry.get("node_port"):
                commands.append([*delete, "--orig-port-dst", str(entry["node_port"]), *nat])
    for name, entry in sorted(new.items()):
        if entry["protocol"] not in CLEARED or not entry["endpoints"]:
            continue
        if name not in old or not old[name]["endpoints"]:
            delete = _delete(entry["protocol"])
            for address in entry["addresses"]:
                commands.append([*delete, "--orig-dst", address, "--orig-port-dst", str(entry["port"])])
            if entry.get("node_port"):
                commands.append([*delete, "--orig-port-dst", str(entry["node_port"])])
    return commands


def conntrack_flows(listing):
    """`conntrack -L` lines as (protocol, original, reply), each direction a dict of src, dst,
    sport and dport; lines of another shape (the summary, ICMP) are left out."""
    flows = []
    for line in listing.splitlines():
        words = line.split()
        if not words or words[0].upper() not in CLEARED:
            continue
        tuples = [{}]
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if sep and key in ("src", "dst", "sport", "dport"):
                if key in tuples[-1]:
                    tuples.append({})
                tuples[-1][key] = value
        if len(tuples) == 2 and all(len(t) == 4 for t in tuples):
            flows.append((words[0].upper(), tuples[0], tuples[1]))
    return flows


def stale_flows(listing, view, service_cidr=None):
    """conntrack -D argument lists for the UDP and SCTP flows of `listing` (`conntrack -L`) that
    the rules of `view` would not have made, as kube-proxy's conntrack reconciler finds them.
    For a node whose record of the last apply is missing, where udp_flows_to_clear has no old
    view to compare with:
    - a flow to a Service port's address DNATed to an address and port that is not one of the
      port's endpoints now;
    - a flow to such an address not DNATed at all while the port has endpoints (made when it had
      none, it would keep bypassing the DNAT);
    - a flow DNATed to another address, to an address in `service_cidr` that no Service port has
      now (its Service is gone); the cluster DNS address's redirect to a local port is not one.
    Flows to a nodePort are left alone: without the node's own addresses they cannot be told
    from traffic through the node to another host's port of the same number."""
    frontends = {}
    for entry in view.values():
        for address in entry["addresses"]:
            frontends[(entry["protocol"], address, str(entry["port"]))] = set(entry["endpoints"])
    network = ipaddress.ip_network(service_cidr) if service_cidr else None
    commands = []
    for protocol, original, reply in conntrack_flows(listing):
        # A Service's DNAT goes to another address (an endpoint is never inside service_cidr); a
        # redirect to a local port, as podnet's DNS blue/green swap does, keeps the address.
        natted = reply["src"] != original["dst"]
        endpoints = frontends.get((protocol, original["dst"], original["dport"]))
        if endpoints is not None:
            stale = f"{reply['src']}:{reply['sport']}" not in endpoints if natted else bool(endpoints)
        else:
            stale = natted and network is not None and _inside(original["dst"], network)
        if stale:
            commands.append([*_delete(protocol), "--orig-src", original["src"], "--orig-dst", original["dst"],
                             "--orig-port-src", original["sport"], "--orig-port-dst", original["dport"]])
    return commands


def _inside(address, network):
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False
