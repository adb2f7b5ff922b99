"""The nftables module's glance and its updates (issue 13), in the kernel.

A run whose content is the recorded one asks the kernel only for the table's generation set,
chain names and rule counts and changes nothing; what the glance can see (a table deleted,
reloaded by someone else or flushed, a chain added, removed or flushed) is repaired, and what
it cannot (a rule edited in place, an element deleted by hand) is repaired by verify_live. A
changed content is sent as one transaction of only what changed, and the table it leaves is the
one a whole load of the same content gives: compared object by object, as nft lists them (nft
lists objects in the order they were made, so an update that adds a set lists it last).

The real module, through a real ansible-playbook (AnsiballZ, as on a node), in scratch network
namespaces with the real nft; never the lab's namespaces or the root one. Needs root, ip, nft.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import probe
from tests.lab.lab_runs import netns_playbook
from tests.unit.test_policy_render import many_pods, model_of, policy, render_table

REPO = Path(__file__).resolve().parents[2]
TABLE = "podnet-policy"

PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - podnet.network.nftables:
        table: {table}
        content: "{{{{ lookup('file', '{content}') }}}}"
        state_dir: {state}
        path: {state}/{table}.nft
        verify_live: {verify_live}
      register: applied
    - ansible.builtin.copy:
        content: "{{{{ applied | to_json }}}}"
        dest: {result}
        mode: "0644"
"""

pytestmark = pytest.mark.skipif(
    not (os.geteuid() == 0 and shutil.which("nft") and shutil.which("ip")), reason="needs root, ip and nft")


def policies(count, first=0, port=80):
    """`count` policies from number `first` on: each selects the web pods (node1 runs only
    those) and admits a podSelector, a namespace and an ipBlock with an except on three ports
    (one a range, one named); every other one limits egress too. Policy number 7 takes `port`."""
    docs = []
    for i in range(first, first + count):
        egress = ", egress: [{to: [{ipBlock: {cidr: 10.%d.0.0/16}}], ports: [{port: 5432}]}]" % i
        docs.append(policy(
            "{podSelector: {matchLabels: {app: web}}, ingress: [{from: ["
            "{podSelector: {matchLabels: {app: client}}}, {namespaceSelector: {}}, "
            "{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.%d.0/24]}}], "
            "ports: [{port: %d}, {port: 8000, endPort: 8100}, {port: http}]}]%s}"
            % (i % 250, port if i == 7 else 80, egress if i % 2 else ""),
            name="p%d" % i))
    return docs


# 1,600 pods: a selected-pods set of over 500 elements, sent in several statements.
PODS = many_pods(1600)


def content(*docs):
    return render_table(model_of(*docs, pods=PODS), "node1", TABLE)


@pytest.fixture
def scratch():
    names = ["podnet-scratch-nft-%d-%d" % (os.getpid(), i) for i in range(2)]
    for netns in names:
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
    yield names
    for netns in names:
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=30)


def nft(netns, *args):
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def apply(netns, tmp_path, text, verify_live=False, state="state"):
    """The module's result ({changed, verified, actions}) from one play in the namespace."""
    (tmp_path / "content.nft").write_text(text)
    play = tmp_path / "play.yml"
    result = tmp_path / "result.json"
    play.write_text(PLAY.format(table=TABLE, content=tmp_path / "content.nft", state=tmp_path / state,
                                result=result, verify_live=str(verify_live).lower()))
    netns_playbook(netns, play, timeout=600)
    return {key: value for key, value in json.loads(result.read_text()).items()
            if key in ("changed", "verified", "actions")}


def objects(netns):
    """The live table object by object, without counters (lab/probe.nft_objects)."""
    return probe.nft_objects(nft(netns, "-j", "-s", "list", "table", "ip", TABLE))


def test_the_glance_sees_what_it_can_and_verify_live_the_rest(scratch, tmp_path):
    netns = scratch[0]
    text = content(*policies(20))
    assert apply(netns, tmp_path, text)["changed"]
    applied = nft(netns, "-s", "list", "table", "ip", TABLE)

    # Nothing changed: known at a glance, nothing sent.
    assert apply(netns, tmp_path, text) == {"changed": False, "verified": "generation", "actions": []}

    # Deleted, reloaded by someone else (without podnet's generation), a chain removed or
    # added by hand: seen, and the table loaded whole again.
    for damage in (["delete", "table", "ip", TABLE], ["flush", "ruleset"],
                   ["-f", str(tmp_path / "content.nft")], ["add", "chain", "ip", TABLE, "mine"],
                   ["flush", "table", "ip", TABLE], ["flush", "chain", "ip", TABLE, "pod_ingress"]):
        if damage[0] == "-f":
            nft(netns, "delete", "table", "ip", TABLE)
        nft(netns, *damage)
        healed = apply(netns, tmp_path, text)
        assert healed["changed"] and healed["actions"] == ["replace table ip %s" % TABLE], damage
        assert nft(netns, "-s", "list", "table", "ip", TABLE) == applied, damage
        assert apply(netns, tmp_path, text)["verified"] == "generation"

    # A rule edited in place keeps the chains, their rule counts and the generation: not seen
    # at a glance ...
    handle = next(line.rsplit("# handle ", 1)[1] for line in nft(
        netns, "-a", "list", "chain", "ip", TABLE, "pod_ingress").splitlines() if "# handle " in line
        and not line.strip().startswith("chain "))
    nft(netns, "replace", "rule", "ip", TABLE, "pod_ingress", "handle", handle.strip(), "accept")
    assert apply(netns, tmp_path, text) == {"changed": False, "verified": "generation", "actions": []}
    # ... verify_live lists the table (the first time also to learn its listing) and puts it back.
    assert apply(netns, tmp_path, text, verify_live=True)["changed"]
    assert nft(netns, "-s", "list", "table", "ip", TABLE) == applied
    assert apply(netns, tmp_path, text, verify_live=True) == {"changed": False, "verified": "listing",
                                                              "actions": []}
    nft(netns, "flush", "chain", "ip", TABLE, "pod_ingress")
    repaired = apply(netns, tmp_path, text, verify_live=True)
    assert repaired["changed"] and repaired["actions"] == ["replace table ip %s" % TABLE]
    assert nft(netns, "-s", "list", "table", "ip", TABLE) == applied


@pytest.mark.parametrize(("name", "before", "after"), [
    ("one policy's port changed", policies(20), policies(20, port=81)),
    ("one policy added", policies(20), policies(21)),
    ("the first policy removed", policies(20), policies(19, first=1)),
    ("half the policies gone, others come", policies(20), policies(10, first=15)),
])
def test_an_update_leaves_the_table_a_whole_load_gives(scratch, tmp_path, name, before, after):
    updated, fresh = scratch
    assert apply(updated, tmp_path, content(*before))["changed"]
    result = apply(updated, tmp_path, content(*after))
    assert result["verified"] == "generation", name
    assert result["actions"][0].startswith("update table ip %s: " % TABLE), result
    assert apply(fresh, tmp_path, content(*after), state="fresh")["actions"][0] == "load table ip %s" % TABLE
    assert objects(updated) == objects(fresh), name
    # And the record followed: the same content again is known at a glance.
    assert apply(updated, tmp_path, content(*after))["verified"] == "generation"


def test_an_element_deleted_by_hand_comes_back_with_the_update(scratch, tmp_path):
    """An element deleted by hand (invisible at a glance), from a set the update refills (it
    flushes a set some elements left and declares it again with all it holds): the update
    itself gives the table a fresh load gives."""
    updated, fresh = scratch
    apply(updated, tmp_path, content(*policies(20)))
    # p7's ports: the set the port change below edits.
    nft(updated, "delete", "element", "ip", TABLE, "p_x_p7_ingress0_ports", "{ tcp . 8000-8100 }")
    result = apply(updated, tmp_path, content(*policies(20, port=81)))
    assert result["actions"][0].startswith("update table ip %s: " % TABLE), result
    apply(fresh, tmp_path, content(*policies(20, port=81)), state="fresh")
    assert objects(updated) == objects(fresh)


def test_an_update_nft_refuses_changes_nothing_and_the_table_is_loaded_whole(scratch, tmp_path):
    """A set made by hand (invisible at a glance) under the name of one the update declares,
    of another type: nft refuses the whole transaction, nothing of it is applied, and the
    module loads the table whole, which gives the same table as a fresh load."""
    updated, fresh = scratch
    apply(updated, tmp_path, content(*policies(20)))
    nft(updated, "add", "set", "ip", TABLE, "p_x_p20_pods", "{ typeof meta mark; }")
    result = apply(updated, tmp_path, content(*policies(21)))
    assert result["actions"][0] == "replace table ip %s" % TABLE
    apply(fresh, tmp_path, content(*policies(21)), state="fresh")
    assert objects(updated) == objects(fresh)
