"""`podnet explain --live`: one real packet of the flow with nftables tracing on, and what the
kernel's trace says beside the explanation.

Pure: `trace_script()` writes the shell script the node runs (a throw-away table whose one
rule sets `meta nftrace set 1` on this flow only, `nft monitor trace` while the source sends
one connection, then the table is deleted again), `parse_trace()` reads `nft monitor trace`'s
lines, `compare()` sets them beside road.explain()'s result. The trace table hooks in at
priority -350, before every podnet chain, so the kernel reports each rule the packet meets.
"""

import re
import shlex

TRACE_TABLE = "podnet-explain-trace"
PRIORITY = -350
LINE = re.compile(
    r"^trace id (?P<id>\S+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) "
    r"(?P<kind>packet:|rule|verdict|policy)\s*(?P<rest>.*)$"
)


def trace_script(packet, sender, source_node, endpoints, seconds=4):
    """Shell for every node (Ansible templates `{{ inventory_hostname }}` into it): on the
    source's node, trace the flow's packets from their first hook and send one connection with
    `sender` (argv); on the others, trace what arrives for the explained endpoints, so the
    endpoint node's verdict (its NetworkPolicy) is seen too.

    The table is deleted whatever happens (trap), and created fresh (an old one from an
    interrupted run is deleted first)."""
    proto = packet["protocol"].lower()
    first = "ip saddr %s ip daddr %s %s dport %d" % (packet["saddr"], packet["daddr"], proto, packet["dport"])
    hook = "prerouting" if packet["path"] == "prerouting" else "output"
    addresses = sorted({e.rpartition(":")[0] for e in endpoints}) or [packet["daddr"]]
    arriving = "ip daddr { %s } meta l4proto %s" % (", ".join(addresses), proto)

    def table(hook, match):
        return (
            "table ip %s { chain trace { type filter hook %s priority %d; policy accept; "
            "%s meta nftrace set 1; }; }" % (TRACE_TABLE, hook, PRIORITY, match)
        )

    out = "/tmp/podnet-explain-trace.$$"
    return "\n".join(
        [
            "node='{{ inventory_hostname }}'",
            "nft delete table ip %s 2>/dev/null" % TRACE_TABLE,
            "trap 'nft delete table ip %s 2>/dev/null; rm -f %s' EXIT" % (TRACE_TABLE, out),
            'if [ "$node" = %s ]; then echo %s; else echo %s; fi | nft -f - || exit 1'
            % (
                shlex.quote(source_node),
                shlex.quote(table(hook, first)),
                shlex.quote(table("prerouting", arriving)),
            ),
            "timeout %d nft monitor trace > %s 2>&1 &" % (seconds + 4, out),
            "monitor=$!",
            # Every node's monitor is up before the one connection goes out.
            "sleep 2",
            'if [ "$node" = %s ]; then %s >/dev/null 2>&1; echo "sender exited $?"; fi'
            % (shlex.quote(source_node), " ".join(shlex.quote(a) for a in sender)),
            "sleep %d" % seconds,
            "kill $monitor 2>/dev/null; wait $monitor 2>/dev/null",
            "cat %s" % out,
        ]
    )


def sender_argv(source, packet, timeout=2):
    """The command that opens one connection of `packet` from `source` (road.parse_source's)."""
    prefix = ["ip", "netns", "exec", source["pod"]["netns"]] if source["kind"] == "pod" else []
    address = "%s:%d" % (packet["daddr"], packet["dport"])
    if packet["protocol"] == "TCP":
        return prefix + ["curl", "-s", "-o", "/dev/null", "--max-time", str(timeout), "http://%s/" % address]
    return prefix + ["socat", "-T%d" % timeout, "-", "UDP:%s" % address]


def parse_trace(text):
    """The first traced packet's events: [{"table", "chain", "kind", "rest"}], in order.

    A packet's trace id changes along its way (a new one after routing) and ids are reused,
    so the first packet is everything from the trace table's first `packet:` line to its next.
    """
    events, started = [], False
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if not match:
            continue
        if match.group("table") == TRACE_TABLE and match.group("kind") == "packet:":
            if started:
                break
            started = True
        if started:
            events.append(
                {
                    "table": match.group("table"),
                    "chain": match.group("chain"),
                    "kind": match.group("kind").rstrip(":"),
                    "rest": match.group("rest"),
                }
            )
    return events


def _verdict_of(event):
    if event["kind"] == "rule":
        match = re.search(r"\(verdict (\w+)", event["rest"])
        return match.group(1) if match else None
    if event["kind"] in ("verdict", "policy"):
        return event["rest"].split()[0] if event["rest"] else None
    return None


def _refusal(event, word):
    """DROP or REJECT when this event refused the packet, else None."""
    text = event["rest"].split("(verdict")[0]
    if event["kind"] == "rule" and word != "continue" and ("reject" in text or "REJECT" in text):
        return "REJECT"
    if word == "drop":
        return "DROP"
    return None


def kernel_outcome(events):
    """{"verdict", "endpoint", "masquerade", "rules": [(table, chain, verdict)]} of one node's events."""
    verdict, endpoint, masquerade, rules, original = "ACCEPT", None, False, [], None
    for event in events:
        word = _verdict_of(event)
        if event["kind"] == "packet":
            daddr = re.search(r"ip daddr (\S+)", event["rest"])
            dport = re.search(r"(?:tcp|udp|sctp) dport (\d+)", event["rest"])
            if daddr and dport:
                here = "%s:%s" % (daddr.group(1), dport.group(1))
                if original is None:
                    original = here
                elif here != original:
                    endpoint = here
        if event["kind"] == "rule" and event["table"] != TRACE_TABLE:
            rules.append((event["table"], event["chain"], word))
            masquerade = masquerade or "masquerade" in event["rest"] or "MASQUERADE" in event["rest"]
        refusal = _refusal(event, word)
        if refusal and verdict == "ACCEPT":
            verdict = refusal
    return {"verdict": verdict, "endpoint": endpoint, "masquerade": masquerade, "rules": rules}


def compare(road, traces):
    """Whether the kernel's traces ({node: parse_trace() events}) agree with the explanation:
    the verdict, the endpoint among the explained ones, the masquerade on the first node, and
    the endpoint node's own verdict (its NetworkPolicy)."""
    entry = road["entry_node"]
    kernel = kernel_outcome(traces.get(entry, []))
    kernel["nodes"] = {}
    differences = []
    if not traces.get(entry):
        differences.append("the kernel traced nothing on %s: the packet never reached its hooks" % entry)
    explained = {e["endpoint"]: e for e in road.get("endpoints", [])}
    target = "%s:%s" % (road["packet"]["daddr"], road["packet"]["dport"])
    chosen = explained.get(kernel["endpoint"] or target)
    if (
        chosen is not None
        and chosen.get("node")
        and chosen["node"] != entry
        and kernel["verdict"] == "ACCEPT"
    ):
        remote = kernel_outcome(traces.get(chosen["node"], []))
        kernel["nodes"][chosen["node"]] = remote
        if not traces.get(chosen["node"]):
            differences.append("the endpoint's node %s traced nothing" % chosen["node"])
        kernel["verdict"] = remote["verdict"]
    if road["verdict"] in ("DROP", "REJECT") and not explained:
        want = road["verdict"]
    elif chosen is not None:
        want = chosen["verdict"]
    else:
        want = None
        differences.append(
            "the kernel sent the packet to %s, which the explanation does not list (%s)"
            % (kernel["endpoint"], ", ".join(explained) or "no endpoints")
        )
    if want is not None and want != kernel["verdict"]:
        differences.append("verdict: explained %s, kernel %s" % (want, kernel["verdict"]))
    if chosen is not None and kernel["verdict"] == "ACCEPT" and chosen["masquerade"] != kernel["masquerade"]:
        differences.append(
            "masquerade: explained %s, kernel %s" % (chosen["masquerade"], kernel["masquerade"])
        )
    events = sum(len(e) for e in traces.values())
    return {"agrees": not differences, "kernel": kernel, "differences": differences, "events": events}
