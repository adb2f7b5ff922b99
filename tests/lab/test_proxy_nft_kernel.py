"""The nftables Service proxy's table in the kernel: loaded whole into a scratch network
namespace, listed back, updated by element deltas as the module does, until nothing differs.

Moved from the unit suite (tests/unit/test_proxy_nft.py), which stays hermetic: these need
root, nft and ip (a throwaway namespace each, never the lab's or the root one). The model and
rulesets are the unit tests' own.
"""

import copy
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.unit.test_proxy_nft import (
    MODEL,
    RULESETS,
    TABLE,
    changes,
    endpoint,
    find,
    full_content,
    has_changes,
    parse_listing,
    render_nftables,
    stale_affinity,
    update_script,
    without_first_endpoint,
)

# --- live: load the table into a scratch network namespace ------------------------------------

LIVE = os.geteuid() == 0 and shutil.which("nft") is not None and shutil.which("ip") is not None


@pytest.fixture
def scratch_netns():
    name = f"podnet-scratch-nft-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def nft(netns, *args, script=None):
    """nft in the scratch namespace only; a script goes through a file, as the module does."""
    command = ["ip", "netns", "exec", netns, "nft", *args]
    if script is None:
        return subprocess.run(command, capture_output=True, text=True, check=False)
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as handle:
        handle.write(script)
        handle.flush()
        return subprocess.run([*command, "-f", handle.name], capture_output=True, text=True, check=False)


def listed(netns):
    done = nft(netns, "-j", "list", "table", "ip", TABLE)
    assert done.returncode == 0, done.stderr
    return parse_listing(json.loads(done.stdout))


def load_whole(netns, ruleset):
    content = f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n" + full_content(ruleset)
    done = nft(netns, script=content)
    assert done.returncode == 0, done.stderr


def apply(netns, ruleset):
    """What the module does: the element updates, or the whole table when changes() says so."""
    diff = changes(ruleset, listed(netns))
    assert has_changes(diff)
    if diff["reload"]:
        load_whole(netns, ruleset)
    else:
        done = nft(netns, script=update_script(ruleset, diff))
        assert done.returncode == 0, done.stderr
    after = changes(ruleset, listed(netns))
    assert has_changes(after) is False, after


@pytest.mark.skipif(not LIVE, reason="needs root and nft")
def test_live_load_and_update(scratch_netns):
    ruleset = RULESETS["node1"]
    load_whole(scratch_netns, ruleset)
    diff = changes(ruleset, listed(scratch_netns))
    assert has_changes(diff) is False, diff

    new = render_nftables(without_first_endpoint(MODEL, "np-cluster"), "node1")
    diff = changes(new, listed(scratch_netns))
    assert diff["reload"] is None and set(diff["elements"]) == {
        "service_endpoints", "service_endpoint_count", "nodeport_endpoints", "nodeport_endpoint_count",
        "hairpin",
    }
    apply(scratch_netns, new)

    # A count beyond the premade pick chains going away: its chain is deleted after its verdict.
    model = without_first_endpoint(MODEL, "np-cluster")
    find(model, "big")["ports"][0]["endpoints"][16:] = []
    smaller = render_nftables(model, "node1")
    diff = changes(smaller, listed(scratch_netns))
    assert (diff["reload"], diff["add_chains"], diff["delete_chains"]) == (None, [], ["service_pick_20"])
    apply(scratch_netns, smaller)

    # A live affinity entry (timeout, expires) is read back, is no change, and is deleted when stale.
    entry = "10.244.1.3 . 10.96.0.16 . tcp . 80"
    script = f"add element ip {TABLE} affinity {{ {entry} timeout 1h : 10.244.9.9 . 8080 }}\n"
    done = nft(scratch_netns, script=script)
    assert done.returncode == 0, done.stderr
    live = listed(scratch_netns)
    assert live["elements"]["affinity"] == {f"{entry} : 10.244.9.9 . 8080"}
    assert has_changes(changes(smaller, live)) is False
    stale = stale_affinity(live["elements"]["affinity"], smaller)
    assert stale == [entry]
    done = nft(scratch_netns, script=f"delete element ip {TABLE} affinity {{ {', '.join(stale)} }}\n")
    assert done.returncode == 0, done.stderr
    assert listed(scratch_netns)["elements"]["affinity"] == set()


@pytest.mark.skipif(not LIVE, reason="needs root and nft")
def test_live_update_with_a_new_pick_chain(scratch_netns):
    load_whole(scratch_netns, RULESETS["node1"])
    model = copy.deepcopy(MODEL)
    find(model, "big")["ports"][0]["endpoints"].append(endpoint("10.244.3.200", 8080))
    apply(scratch_netns, render_nftables(model, "node1"))
