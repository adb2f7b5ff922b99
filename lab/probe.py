"""Real packets through the lab: who answers, and whom did they see.

Used by `make demo` (lab/matrix.py) and by the molecule verify tests. Every
probe runs a real client (curl, socat, ping) inside a lab namespace or a pod
namespace and reads podnet-echo's JSON answer, which names the pod that
answered and the source address it saw. Every probe has a time limit.
"""

import json
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from podnet_lab import node_exec_argv  # noqa: E402

PODS_STATE_DIR = "/var/lib/podnet/pods"
INTERNET_IP = "203.0.113.10"


class Source:
    """Where a probe starts: a lab namespace (node, client, ...) or a pod on a node."""

    def __init__(self, node, pod=None):
        self.node = node
        self.pod = pod  # pod dict from pods(), or None for the node itself

    @property
    def label(self):
        return "%s (%s)" % (self.pod["name"], self.node) if self.pod else self.node

    def argv(self, command):
        prefix = node_exec_argv(self.node)
        if self.pod:
            prefix = prefix + ["ip", "netns", "exec", self.pod["netns"]]
        return prefix + command

    def run(self, command, timeout=10, input=""):
        try:
            return subprocess.run(self.argv(command), input=input, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 124, "", "timeout")


def decode_all(text):
    """Every JSON object in a concatenation of JSON documents."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    text = text.strip()
    while index < len(text):
        obj, end = decoder.raw_decode(text, index)
        objects.append(obj)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return objects


def pods(nodes):
    """The test pods each node runs, as the node itself recorded them."""
    found = []
    for node in nodes:
        proc = Source(node).run(["sh", "-c", "cat %s/*.json 2>/dev/null; true" % PODS_STATE_DIR])
        for pod in decode_all(proc.stdout):
            pod["node"] = node
            found.append(pod)
    return sorted(found, key=lambda p: (p["namespace"], p["name"]))


def http(source, ip, port=80, timeout=3):
    """GET http://ip:port/ from source; the echo's JSON answer, or None."""
    proc = source.run(["curl", "-s", "--max-time", str(timeout), "http://%s:%s/" % (ip, port)],
                      timeout=timeout + 5)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def udp(source, ip, port, timeout=2):
    """One UDP datagram to ip:port from source; the echo's JSON answer, or None."""
    proc = source.run(["socat", "-T%d" % timeout, "-", "UDP:%s:%s" % (ip, port)], timeout=timeout + 5,
                      input="podnet\n")
    try:
        return json.loads(proc.stdout.strip().splitlines()[0]) if proc.stdout.strip() else None
    except ValueError:
        return None


def connect(source, ip, port, protocol="TCP", timeout=2):
    """One connection (TCP) or datagram (UDP): ("answer", echo JSON), ("REJECT", why) when
    refused at once, or ("DROP", why) when nothing came back in time."""
    if protocol == "TCP":
        proc = source.run(["curl", "-sS", "--max-time", str(timeout), "http://%s:%s/" % (ip, port)],
                          timeout=timeout + 5)
        if proc.returncode == 0:
            return "answer", json.loads(proc.stdout)
        # curl: 7 = refused (a TCP reset or ICMP unreachable came back), 28 = time limit.
        return ("REJECT" if proc.returncode == 7 else "DROP"), proc.stderr.strip()
    proc = source.run(["socat", "-T%d" % timeout, "-", "UDP:%s:%s" % (ip, port)], timeout=timeout + 5,
                      input="podnet\n")
    if proc.stdout.strip():
        return "answer", json.loads(proc.stdout.strip().splitlines()[0])
    return ("REJECT" if "refused" in proc.stderr else "DROP"), proc.stderr.strip()


def ping(source, ip, timeout=2):
    return source.run(["ping", "-c", "1", "-W", str(timeout), ip], timeout=timeout + 5).returncode == 0


def first_tcp_port(pod):
    for port in pod.get("ports", []):
        if port.get("protocol", "TCP").upper() == "TCP":
            return port["containerPort"]
    return None


def matrix(nodes, sources, targets):
    """Probe every target from every source, in parallel.

    targets: list of (label, ip, port). Returns {(source.label, target label): answer or None}.
    """
    jobs = [(s, t) for s in sources for t in targets]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: http(job[0], job[1][1], job[1][2]), jobs))
    return {(s.label, t[0]): answer for (s, t), answer in zip(jobs, answers, strict=True)}


# Run inside a pod: every (ip, port, protocol) at once, one fresh socket each, so a
# whole row of a NetworkPolicy truth table costs one timeout, not one per cell.
_REACH = r"""
import json, socket, sys, threading
targets, timeout, out = json.load(sys.stdin), float(sys.argv[1]), {}
def probe(i, ip, port, protocol):
    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(timeout)
            if protocol == "TCP":
                s.connect((ip, port))
            else:
                s.sendto(b"podnet\n", (ip, port))
                s.recvfrom(65535)
        out[i] = "answer"
    except socket.timeout:
        out[i] = "DROP"
    except OSError as exc:
        out[i] = "REJECT %s" % exc.strerror
threads = [threading.Thread(target=probe, args=(i, *t)) for i, t in enumerate(targets)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps([out[i] for i in range(len(targets))]))
"""


def reach(source, targets, timeout=1.0):
    """Try every (ip, port, protocol) of `targets` from `source` in parallel: a list of
    "answer" (TCP connected / UDP answered), "DROP" (nothing back in time) or "REJECT ...",
    in the order of `targets`."""
    proc = source.run(["python3", "-c", _REACH, str(timeout)], timeout=timeout + 20,
                      input=json.dumps([list(t) for t in targets]))
    if proc.returncode != 0:
        raise RuntimeError("probe from %s failed: %s" % (source.label, proc.stderr.strip()[-500:]))
    return json.loads(proc.stdout)


ALLOCATIONS_FILE = "/etc/podnet/services/allocations.json"


def services_model(nodes, pods, text=None, filename="services.yml"):
    """The services model as the services play computed it: the file (or `text`), the pods'
    real IPs and the clusterIPs and nodePorts the nodes persisted."""
    repo = pathlib.Path(__file__).resolve().parent.parent
    from ansible_collections.podnet.network.plugins.module_utils.services.model import load_services

    if text is None:
        text = (repo / "inventory" / "lab" / "services.yml").read_text()
    previous = json.loads(Source(sorted(nodes)[0]).run(["cat", ALLOCATIONS_FILE]).stdout or "{}")
    return load_services(text, filename, pods, previous=previous)


# What traffic and time change in a node's rule listings, which is no change podnet made: the
# elements a dynamic set or map learned from traffic (session affinity, each expiring after
# its timeout), their countdowns, and the chains' packet counters Debian 13's iptables-save
# prints. Tests that compare listings before and after a run strip these.
_LEARNED = re.compile(r"(\n\t+flags timeout\n)\t+elements = \{[^}]*\}\n")


def stable_nft(listing):
    return re.sub(r" expires \S+", "", _LEARNED.sub(r"\1", listing))


def nft_objects(listing):
    """A table as `nft -j -s list table` gives it (`listing`), object by object: sets by name
    with their elements sorted, each chain's rules in order, handles left out. nft lists
    objects in the order they were made, so a table that was updated (a set added after
    others) lists in another order than the same table loaded whole; these compare equal."""
    table = {"sets": {}, "chains": {}}
    for item in json.loads(listing)["nftables"]:
        (kind, value), = item.items()
        value = {key: field for key, field in value.items() if key != "handle"}
        if kind in ("set", "map"):
            value["elem"] = sorted(json.dumps(element, sort_keys=True) for element in value.get("elem", ()))
            table["sets"][value["name"]] = value
        elif kind == "chain":
            table["chains"][value["name"]] = dict(value, rules=[])
        elif kind == "rule":
            table["chains"][value["chain"]]["rules"].append(value)
    return table


def stable_iptables(saved):
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in saved.splitlines() if not line.startswith("#")]
