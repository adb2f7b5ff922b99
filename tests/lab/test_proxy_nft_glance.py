"""The nftables proxy's glance (issue 13): a run with the inputs it recorded asks the kernel
only for the table's generation set and chain names, renders nothing, and changes nothing;
what the glance can see (a flushed ruleset, a chain added) is repaired, and what it cannot (an
element deleted by hand inside podnet's table) is repaired by verify_live.

The real module, through a real ansible-playbook (AnsiballZ, so the renderer's source is read
from the module's zip as on a node), in a scratch network namespace with the real nft; never
the lab's namespaces or the root one. Needs root, ip and nft.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import compact, delta_from

from tests.lab.lab_runs import netns_playbook
from tests.unit.test_proxy_iptables import changed_model, ep, service, sport, web_endpoints

REPO = Path(__file__).resolve().parents[2]
TABLE = "podnet-services"
NEW_WEB = service("web", "10.96.0.20", [sport("http", "TCP", 80, web_endpoints(8080, last="10.244.3.6"),
                                              target_port=8080)])

# A model under 256 KB goes whole with the first ask (one module run either way): the
# delta's road is taken by models over it, as at scale.
PADDING = 700


def big(model):
    """`model` with PADDING more Services (namespace pad, after default), over 256 KB."""
    pads = [service("pad-%03d" % i, "10.96.%d.%d" % (8 + i // 250, 1 + i % 250),
                    [sport("http", "TCP", 80, [ep("10.244.%d.%d" % (1 + i % 3, 10 + i // 3 % 200), 8080,
                                                  "node%d" % (1 + i % 3))], target_port=8080)],
                    namespace="pad") for i in range(PADDING)]
    every = sorted([*model["services"], *pads], key=lambda svc: (svc["namespace"], svc["name"]))
    return dict(model, services=every)


PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - podnet.network.proxy_nftables:
        model: "{{{{ lookup('file', '{model}'){as_json} }}}}"
        model_delta: "{{{{ lookup('file', '{guess}') | default(omit, true) }}}}"
        node: node1
        state_dir: {state}
        path: {state}/podnet-services.nft
        verify_live: {verify_live}
      register: proxy
    - ansible.builtin.copy:
        content: "{{{{ proxy | to_json }}}}"
        dest: {result}
        mode: "0644"
"""

pytestmark = pytest.mark.skipif(
    not (os.geteuid() == 0 and shutil.which("nft") and shutil.which("ip")), reason="needs root, ip and nft")


@pytest.fixture
def scratch():
    netns = "podnet-scratch-glance-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
    yield netns
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=30)


def nft(netns, *args):
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def apply(netns, tmp_path, model, verify_live=False, as_sent=False, keys=("changed", "verified", "actions"),
          guess=""):
    """The module's result ({changed, verified, actions}) from one play in the namespace.
    `as_sent`: the model's text as the services play sends it (compact), not through to_json.
    `guess`: the delta the services play sends along (filter services_delta)."""
    (tmp_path / "model.json").write_text(compact(model) if as_sent else json.dumps(model))
    (tmp_path / "guess.json").write_text(guess)
    play = tmp_path / "play.yml"
    result = tmp_path / "result.json"
    play.write_text(PLAY.format(model=tmp_path / "model.json", guess=tmp_path / "guess.json",
                                state=tmp_path / "state", result=result,
                                verify_live=str(verify_live).lower(),
                                as_json="" if as_sent else " | from_json | to_json"))
    netns_playbook(netns, play)
    return {key: value for key, value in json.loads(result.read_text()).items() if key in keys}


def test_the_glance_sees_what_it_can_and_verify_live_the_rest(scratch, tmp_path):
    model = changed_model()
    first = apply(scratch, tmp_path, model)
    assert first["changed"] and first["verified"] == "listing"
    applied = nft(scratch, "list", "table", "ip", TABLE)

    # Nothing changed: known at a glance, nothing rendered or sent.
    assert apply(scratch, tmp_path, model) == {"changed": False, "verified": "generation", "actions": []}

    # An element deleted by hand inside podnet's table is not seen at a glance ...
    element = next(line.split("{")[-1].strip().rstrip(",}").strip() for line in applied.splitlines()
                   if " : goto " in line)
    nft(scratch, "delete", "element", "ip", TABLE, "service_endpoint_count", "{ %s }" % element)
    assert apply(scratch, tmp_path, model)["verified"] == "generation"
    # ... verify_live lists the table and puts it back; after that, a glance again.
    repaired = apply(scratch, tmp_path, model, verify_live=True)
    assert repaired["changed"] and repaired["verified"] == "listing", repaired
    assert nft(scratch, "list", "table", "ip", TABLE) == applied
    assert apply(scratch, tmp_path, model)["verified"] == "generation"

    # A flushed ruleset (`systemctl restart nftables`) and a chain added by hand are seen.
    nft(scratch, "flush", "ruleset")
    healed = apply(scratch, tmp_path, model)
    assert healed["changed"] and healed["verified"] == "listing"
    assert healed["actions"][0] == "load table ip %s whole: it does not exist" % TABLE
    nft(scratch, "add", "chain", "ip", TABLE, "mine")
    healed = apply(scratch, tmp_path, model)
    assert healed["changed"] and healed["verified"] == "listing"
    assert nft(scratch, "list", "table", "ip", TABLE) == applied
    # `flush table` keeps the generation set, chains and elements: the rule counts show it.
    nft(scratch, "flush", "table", "ip", TABLE)
    healed = apply(scratch, tmp_path, model)
    assert healed["changed"] and healed["verified"] == "listing"
    assert nft(scratch, "list", "table", "ip", TABLE) == applied

    # Other inputs: deltas from the trusted record, then a glance again.
    update = apply(scratch, tmp_path, changed_model(web=NEW_WEB))
    assert update["verified"] == "record" and update["actions"][0].startswith("update table ip %s" % TABLE)
    assert apply(scratch, tmp_path, changed_model(web=NEW_WEB))["verified"] == "generation"


def test_a_changed_model_travels_as_the_services_that_changed(scratch, tmp_path):
    """The action plugin sends a node that keeps a model (over 256 KB) only the Services that
    changed; the node rebuilds the model and applies exactly what the model whole gives (verify_live,
    which lists the live table and compares it with the whole render, finds nothing to do)."""
    keys = ("changed", "verified", "model_from")
    first = apply(scratch, tmp_path, big(changed_model()), as_sent=True, keys=keys)
    assert first == {"changed": True, "verified": "listing", "model_from": "whole"}
    update = apply(scratch, tmp_path, big(changed_model(web=NEW_WEB)), as_sent=True, keys=keys)
    assert update == {"changed": True, "verified": "record", "model_from": "delta"}
    assert apply(scratch, tmp_path, big(changed_model(web=NEW_WEB)), verify_live=True, as_sent=True,
                 keys=keys) == {"changed": False, "verified": "listing", "model_from": "whole"}
    assert "10.244.3.6" in nft(scratch, "list", "table", "ip", TABLE)
    # Not the compact text the node rebuilds (to_json's spacing): sent whole, no round lost.
    assert apply(scratch, tmp_path, big(changed_model()), keys=keys)["model_from"] == "whole"
    assert apply(scratch, tmp_path, big(changed_model()), as_sent=True, keys=keys) == {
        "changed": True, "verified": "record", "model_from": "delta"}


def test_deltas_in_a_row_leave_the_table_a_whole_render_gives(scratch, tmp_path):
    """Each change rendered from the Services it touches alone (nft.render_update): after each,
    verify_live (the model rendered whole, the live table listed and compared, the boot script
    compared to the byte) finds nothing to do. With the controller's guess (the delta from the
    model it resolved last) the node applies in the first ask; a wrong guess costs a round,
    not a result."""
    keys = ("changed", "verified", "model_from")
    twin = service("twin", "10.96.0.40", [sport("http", "TCP", 81, [ep("10.244.1.5", 8080, "node1")],
                                                target_port=8080)])
    web_without_shared = service("web", "10.96.0.20", [sport(
        "http", "TCP", 80, [ep("10.244.2.5", 8080, "node2"), ep("10.244.3.6", 8080, "node3")],
        target_port=8080)])
    added = changed_model(web=NEW_WEB)
    added["services"] = sorted([*added["services"], twin], key=lambda svc: (svc["namespace"], svc["name"]))
    let_go = dict(added, services=[web_without_shared if svc["name"] == "web" else svc
                                   for svc in added["services"]])
    removed = dict(let_go, services=let_go["services"][1:])
    # An endpoint moved; a pod behind a second Service (its hairpin element shared); the pod
    # let go by one of them; a Service removed.
    steps = [big(step) for step in (changed_model(), changed_model(web=NEW_WEB), added, let_go, removed)]
    assert apply(scratch, tmp_path, steps[0], as_sent=True, keys=keys)["model_from"] == "whole"
    for before, after in zip(steps, steps[1:], strict=False):
        guess = compact(delta_from(compact(before), after))
        assert apply(scratch, tmp_path, after, as_sent=True, keys=keys, guess=guess) == {
            "changed": True, "verified": "record", "model_from": "delta"}
        assert apply(scratch, tmp_path, after, verify_live=True, as_sent=True, keys=keys) == {
            "changed": False, "verified": "listing", "model_from": "whole"}
    # A guess from a model the node does not keep: the delta from the one it keeps instead.
    wrong = compact(delta_from(compact(steps[1]), steps[2]))
    assert apply(scratch, tmp_path, steps[2], as_sent=True, keys=keys, guess=wrong) == {
        "changed": True, "verified": "record", "model_from": "delta"}
    assert apply(scratch, tmp_path, steps[2], verify_live=True, as_sent=True, keys=keys)["changed"] is False
