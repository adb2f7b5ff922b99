"""Snapshot the machine's own (root) network namespace, to prove the lab and
the tests never touch it: addresses, routes, rules, net.* sysctls, nftables.

  python3 lab/rootns.py snapshot FILE   # before
  python3 lab/rootns.py compare FILE    # after: exit 1 and show what differs
"""

import difflib
import json
import re
import subprocess
import sys

VOLATILE_SYSCTLS = ("net.netfilter.nf_conntrack_count",)


def _ip_json(*args):
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    data = json.loads(out or "[]")
    for obj in data:
        obj.pop("expires", None)
        for addr in obj.get("addr_info", []):
            addr.pop("valid_life_time", None)
            addr.pop("preferred_life_time", None)
    return data


def snapshot():
    sysctls = subprocess.run(["sysctl", "-a"], capture_output=True, text=True).stdout.splitlines()
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return {
        "addr": _ip_json("addr"),
        "route": _ip_json("route", "show", "table", "all"),
        "route6": _ip_json("-6", "route", "show", "table", "all"),
        "rule": _ip_json("rule"),
        "sysctl": sorted(s for s in sysctls if s.startswith("net.") and not s.startswith(VOLATILE_SYSCTLS)),
        "nft": re.sub(r"packets \d+ bytes \d+", "", nft),
    }


def main(argv):
    if len(argv) != 2 or argv[0] not in ("snapshot", "compare"):
        sys.stderr.write(__doc__)
        return 2
    command, path = argv
    now = snapshot()
    if command == "snapshot":
        with open(path, "w") as handle:
            json.dump(now, handle, indent=1, sort_keys=True)
        return 0
    with open(path) as handle:
        before = json.load(handle)
    if before == now:
        print("root network namespace unchanged (addresses, routes, rules, net.* sysctls, nftables)")
        return 0
    a = json.dumps(before, indent=1, sort_keys=True).splitlines()
    b = json.dumps(now, indent=1, sort_keys=True).splitlines()
    diff = difflib.unified_diff(a, b, "before", "after", lineterm="")
    print("ROOT NETWORK NAMESPACE CHANGED:\n" + "\n".join(diff))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
