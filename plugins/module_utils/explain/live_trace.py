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


def trace_script(packet, sender, seconds=3):
    """Shell for the source's node: trace one connection of `packet` sent by `sender` (argv).

    The table is deleted whatever happens (trap), and created fresh (an old one from an
    interrupted run is deleted first)."""
    proto = packet["protocol"].lower()
    match = "ip saddr %s ip daddr %s %s dport %d" % (packet["saddr"], packet["daddr"], proto, packet["dport"])
    hook = "prerouting" if packet["path"] == "prerouting" else "output"
    table = (
        "table ip %s { chain trace { type filter hook %s priority %d; policy accept; "
        "%s meta nftrace set 1; } }" % (TRACE_TABLE, hook, PRIORITY, match)
    )
    out = "/tmp/podnet-explain-trace.$$"
    return "\n".join(
        [
            "nft delete table ip %s 2>/dev/null" % TRACE_TABLE,
            "trap 'nft delete table ip %s 2>/dev/null; rm -f %s' EXIT" % (TRACE_TABLE, out),
            "nft -f - <<'EOF'\n%s\nEOF" % table,
            "timeout %d nft monitor trace > %s 2>&1 &" % (seconds + 2, out),
            "monitor=$!",
            "sleep 0.5",
            "%s >/dev/null 2>&1" % " ".join(shlex.quote(a) for a in sender),
            'echo "sender exited $?"',
            "sleep 0.5",
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
    """The first traced packet's events: [{"table", "chain", "kind", "rest"}], in order."""
    events, first = [], None
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if not match:
            continue
        if first is None:
            first = match.group("id")
        if match.group("id") != first:
            continue
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


def kernel_outcome(events):
    """{"verdict", "endpoint", "masquerade", "rules": [(table, chain, verdict)]} from the events."""
    verdict, endpoint, masquerade, rules = "ACCEPT", None, False, []
    original = None
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
            if "masquerade" in event["rest"] or "MASQUERADE" in event["rest"]:
                masquerade = True
        if word in ("drop", "reject") or (
            event["kind"] == "rule" and "reject" in event["rest"].split("(verdict")[0] and word != "continue"
        ):
            verdict = "REJECT" if "reject" in (word or "") or "reject" in event["rest"] else "DROP"
    return {"verdict": verdict, "endpoint": endpoint, "masquerade": masquerade, "rules": rules}


def compare(road, events):
    """Whether the kernel's trace agrees with the explanation: verdict, endpoint, masquerade."""
    kernel = kernel_outcome(events)
    differences = []
    if not events:
        differences.append("the kernel traced nothing: the packet never reached the node's hooks")
    explained = {e["endpoint"]: e for e in road.get("endpoints", [])}
    target = "%s:%s" % (road["packet"]["daddr"], road["packet"]["dport"])
    chosen = explained.get(kernel["endpoint"] or target)
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
        # A policy drop happens on the endpoint's node, which this trace (the source's node) may not see.
        remote = chosen is not None and chosen.get("node") and chosen["node"] != road["entry_node"]
        if not (want == "DROP" and kernel["verdict"] == "ACCEPT" and remote):
            differences.append("verdict: explained %s, kernel %s" % (want, kernel["verdict"]))
    if (
        chosen is not None
        and kernel["verdict"] == "ACCEPT"
        and chosen["masquerade"] != kernel["masquerade"]
        and chosen.get("masquerade_here", True)
    ):
        differences.append(
            "masquerade: explained %s, kernel %s" % (chosen["masquerade"], kernel["masquerade"])
        )
    return {"agrees": not differences, "kernel": kernel, "differences": differences, "events": len(events)}
