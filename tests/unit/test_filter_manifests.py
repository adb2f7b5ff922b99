"""The filter plugin reads the manifest files itself, one way for both readers."""

import hashlib
import json
import os
import pathlib
import time

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.podnet.network.plugins.filter import podnet as filter_plugin
from ansible_collections.podnet.network.plugins.filter.podnet import (
    podnet_allocations_file,
    podnet_node_pods,
    podnet_policies_checked,
    podnet_policy_model,
    podnet_resolve_policies,
    podnet_service_allocations,
    podnet_services_delta,
    podnet_services_model,
)
from ansible_collections.podnet.network.plugins.module_utils.common import manifests
from ansible_collections.podnet.network.plugins.module_utils.services.model import resolve_services
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import compact, delta_from
from ansible_collections.podnet.network.plugins.plugin_utils.memo_ref import (
    MemoReferenceError,
    is_reference,
    text_of,
)


# With a memo directory, the plan's check and the resolve return a reference to the text
# they kept (plugin_utils/memo_ref.py): most tests here compare texts, read back.
def podnet_services_checked(*args, **kwargs):
    return text_of(filter_plugin.podnet_services_checked(*args, **kwargs))


def podnet_resolve_services(*args, **kwargs):
    return text_of(filter_plugin.podnet_resolve_services(*args, **kwargs))

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"
POLICY = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n"
          "spec: {podSelector: {}}\n")


def test_services_model_reads_the_file_at_its_path(tmp_path):
    path = tmp_path / "services.yml"
    path.write_text(SERVICE + "---\n" + POLICY)
    model = podnet_services_model(str(path), [])
    assert [(svc["name"], svc["cluster_ip"]) for svc in model["services"]] == [("web", "10.96.0.11")]


@pytest.mark.parametrize("path", ["missing.yml", ".", None])
def test_no_services_file_is_no_services(tmp_path, path):
    model = podnet_services_model(path and str(tmp_path / path), [])
    assert model["services"] == []


def test_services_errors_name_the_path(tmp_path):
    path = tmp_path / "services.yml"
    path.write_text("apiVersion: v1\nkind: Pod\n")
    with pytest.raises(AnsibleFilterError, match="^%s: document 1 \\(line 1\\): kind: kind Pod" % path):
        podnet_services_model(str(path), [])


def test_policy_model_reads_every_path(tmp_path):
    (tmp_path / "services.yml").write_text(SERVICE)
    (tmp_path / "policies.yml").write_text(POLICY)
    model = podnet_policy_model([str(tmp_path / "services.yml"), str(tmp_path / "policies.yml")], [])
    assert [(policy["name"], policy["source"]) for policy in model["policies"]] == [
        ("deny", "%s: document 1 (line 1)" % (tmp_path / "policies.yml"))]


def test_policies_checked_once_then_resolved_without_the_files(tmp_path):
    """The plan checks the policies (against the declared pods) and hands them on as text;
    the policy play resolves that text against the running pods: the same model as reading
    the files, though the files are gone by then."""
    (tmp_path / "services.yml").write_text(SERVICE)
    block = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-in}\n"
             "spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n"
             "  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports: [{port: http}]\n")
    (tmp_path / "policies.yml").write_text(POLICY + "---\n" + block)
    paths = [str(tmp_path / "services.yml"), str(tmp_path / "policies.yml")]
    running = [{"namespace": "default", "name": "web-0", "labels": {"app": "web"}, "node": "node1",
                "ip": "10.244.1.5", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]
    direct = podnet_policy_model(paths, running, "10.244.0.0/16", str(tmp_path / "services.yml"))
    checked = podnet_policies_checked(paths, [], "10.244.0.0/16", str(tmp_path / "services.yml"))
    assert isinstance(checked, str)
    for path in paths:
        pathlib.Path(path).unlink()
    assert podnet_resolve_policies(checked, running, "10.244.0.0/16") == direct
    # The ipBlock's except and the named port made it through the text.
    assert direct["policies"][1]["ingress"][0]["peers"] == [
        "10.0.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11",
        "10.64.0.0/10", "10.128.0.0/9"]
    assert "8080" in json.dumps(direct["policies"][1]["ingress"][0]["ports"])


def test_policies_checked_refuses_what_the_plan_must(tmp_path):
    (tmp_path / "policies.yml").write_text(SERVICE)
    with pytest.raises(AnsibleFilterError, match="policies.yml: document 1 .*Service"):
        podnet_policies_checked([str(tmp_path / "policies.yml")], [], "10.244.0.0/16", "services.yml")


def test_policy_model_refuses_a_path_it_cannot_read(tmp_path):
    with pytest.raises(AnsibleFilterError, match="missing.yml: cannot read: No such file or directory"):
        podnet_policy_model([str(tmp_path / "missing.yml")], [])


# The plan reads the file once (services_checked); the services play resolves that text.
NAMED = ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n"
         "  ports: [{port: 80, targetPort: http}]\n---\n"
         "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {ports: [{name: a, port: 81}]}\n---\n"
         "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ext}\n"
         "subsets: [{addresses: [{ip: 192.0.2.2}, {ip: 192.0.2.1}], ports: [{name: a, port: 8081}]}]\n")
DECLARED = [{"namespace": "default", "name": "web-0", "labels": {"app": "web"},
             "ports": [{"name": "http", "containerPort": 8080}], "ip": None, "node": "node1"}]
RUNNING = [dict(DECLARED[0], ip="10.244.0.5")]


def test_checked_text_resolves_to_the_same_model_as_one_read(tmp_path):
    path = tmp_path / "services.yml"
    path.write_text(NAMED)
    previous = {"default/ext": {"cluster_ip": "10.96.0.50"}}
    checked = podnet_services_checked(str(path), DECLARED, previous)
    assert isinstance(checked, str) and "\n" not in checked
    resolved = podnet_resolve_services(checked, RUNNING)
    assert json.loads(resolved) == podnet_services_model(str(path), RUNNING, previous)
    assert podnet_service_allocations(resolved)["default/ext"]["cluster_ip"] == "10.96.0.50"


def test_a_named_port_no_pod_declares_fails_in_the_plan_naming_the_object(tmp_path):
    path = tmp_path / "services.yml"
    path.write_text(NAMED)
    pods = [dict(DECLARED[0], ports=[{"name": "web", "containerPort": 8080}])]
    with pytest.raises(AnsibleFilterError, match="document 1 \\(line 1\\), Service default/web: "
                                                 "spec.ports\\[0\\].targetPort: no pod"):
        podnet_services_checked(str(path), pods)
    # ... and the same words if the pods the nodes run differ from the declared ones.
    checked = podnet_services_checked(str(path), DECLARED)
    with pytest.raises(AnsibleFilterError, match="document 1 \\(line 1\\), Service default/web: "
                                                 "spec.ports\\[0\\].targetPort: no pod"):
        podnet_resolve_services(checked, pods)


def test_the_services_file_is_parsed_once_for_both_readers(tmp_path, monkeypatch):
    path = tmp_path / "services.yml"
    path.write_text(SERVICE + "---\n" + POLICY)
    parses = []
    real = manifests._parse
    monkeypatch.setattr(manifests, "_parse", lambda *args: parses.append(args[1]) or real(*args))
    podnet_services_checked(str(path), [])
    podnet_policy_model([str(path)], [])
    assert parses == [str(path)]
    path.write_text(SERVICE)  # another text is parsed again
    assert json.loads(podnet_services_checked(str(path), []))["services"][0]["name"] == "web"
    assert parses == [str(path), str(path)]


# Between runs the plan remembers its last check (memo_dir): a run with the same file, pods and
# settings takes it instead of parsing 10,000 Services again.
LOCAL = ("apiVersion: v1\nkind: Service\nmetadata: {name: loc}\n"
         "spec: {type: NodePort, externalTrafficPolicy: Local, ports: [{name: a, port: 82}]}\n---\n"
         "apiVersion: v1\nkind: Endpoints\nmetadata: {name: loc}\n"
         "subsets: [{addresses: [{ip: 192.0.2.9}], ports: [{name: a, port: 8082}]}]\n")


@pytest.fixture
def counted(monkeypatch):
    """The services and policy reads the filters run, and the warnings they show."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    calls, warnings = [], []
    for name in ("read_services", "read_policies"):
        real = getattr(filters, name)
        monkeypatch.setattr(filters, name, lambda *a, _real=real, _name=name, **k: calls.append(_name)
                            or _real(*a, **k))
    monkeypatch.setattr(filters._display, "warning", warnings.append)
    return calls, warnings


def test_a_check_is_remembered_for_the_same_inputs_only(tmp_path, counted):
    calls, warnings = counted
    memo = tmp_path / "memo"
    path = tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    first = podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
    assert calls == ["read_services"] and len(warnings) == 1 and "has no nodeName" in warnings[0]
    # The same inputs: remembered, the warning shown again.
    assert podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo)) == first
    assert calls == ["read_services"] and warnings[1] == warnings[0]
    # The next run's previous allocations are the ones this check made: still remembered, and
    # the same as a read with them (allocation is stable).
    allocated = podnet_service_allocations(first)
    assert podnet_services_checked(str(path), DECLARED, allocated, memo_dir=str(memo)) == first
    assert calls == ["read_services"]
    assert podnet_services_checked(str(path), DECLARED, allocated) == first
    calls.clear()
    # Anything else differs: read again.
    for pods, previous, text in [(DECLARED, {"default/ext": {"cluster_ip": "10.96.0.50"}}, None),
                                 ([], allocated, None), (DECLARED, allocated, NAMED)]:
        if text:
            path.write_text(text)
        podnet_services_checked(str(path), pods, previous, memo_dir=str(memo))
    assert calls == ["read_services"] * 3
    # Without a memo directory, every call reads.
    podnet_services_checked(str(path), DECLARED, allocated)
    podnet_services_checked(str(path), DECLARED, allocated)
    assert calls == ["read_services"] * 5


def test_a_memo_text_that_is_not_the_one_its_record_names_is_not_taken(tmp_path, counted):
    """The memo keeps its text as it is (NAME.DIGEST.txt) beside its record (NAME.json), which
    names the text by digest: a text changed or left by a write that did not finish is a
    miss, and the check runs again; a text that is gone too."""
    calls, _ = counted
    memo = tmp_path / "memo"
    path = tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    first = podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
    kept = memo / ("services-checked.%s.txt" % hashlib.sha256(first.encode()).hexdigest()[:16])
    assert kept.read_text() == first
    assert json.loads((memo / "services-checked.json").read_text())["text_sha256"] == \
        hashlib.sha256(first.encode()).hexdigest()
    # A miss checks again (from the state kept beside it: the file did not change) and keeps
    # the text anew; a hit writes nothing.
    kept.write_text(first.replace("10.96", "10.97"))
    assert podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo)) == first
    assert kept.read_text() == first
    kept.unlink()
    assert podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo)) == first
    assert kept.read_text() == first
    before = (calls[:], kept.stat().st_mtime_ns, kept.stat().st_ino)
    assert podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo)) == first
    assert (calls, kept.stat().st_mtime_ns, kept.stat().st_ino) == before


def test_allocations_come_from_the_plans_memo_for_the_text_it_kept(tmp_path):
    """The services play asks for the allocations of the plan's checked text on every run: the
    plan's memo has them (no parse of a model of 10,000 Services), for that very text only."""
    memo = tmp_path / "memo"
    path = tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    checked = podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
    text = json.dumps(podnet_service_allocations(checked), separators=(",", ":"), sort_keys=True)
    assert podnet_service_allocations(checked, "") == text  # no memo: computed, same text
    assert podnet_service_allocations(checked, str(memo)) == text
    # Taken from the memo, not computed: a memo that says otherwise is believed...
    kept = json.loads((memo / "services-checked.json").read_text())
    kept["more"]["allocations"] = '{"default/x":{}}'
    (memo / "services-checked.json").write_text(json.dumps(kept))
    assert podnet_service_allocations(checked, str(memo)) == '{"default/x":{}}'
    # ... for the text it kept only: another model's are computed.
    other = json.dumps(dict(json.loads(checked), services=[]), separators=(",", ":"), sort_keys=True)
    assert podnet_service_allocations(other, str(memo)) == "{}"


def test_an_endpoints_change_is_checked_again_without_a_whole_read(tmp_path, counted):
    """Under the same settings and previous allocations, a file whose Endpoints alone changed
    is checked again from the last check's state (services/model.recheck_services): the
    same text and warnings as a whole read; anything else is read whole."""
    calls, warnings = counted
    memo, path = str(tmp_path / "memo"), tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    first = podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    path.write_text(NAMED + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.8"))
    again = podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    assert calls == ["read_services"] and "192.0.2.8" in again and "192.0.2.8" in warnings[-1]
    assert again == podnet_services_checked(str(path), DECLARED, {}) != first
    assert warnings[-1] == warnings[-2] and len(warnings) == 3
    # Other previous allocations, other pods: read whole.
    path.write_text(NAMED + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.7"))
    podnet_services_checked(str(path), [], {}, memo_dir=memo)
    assert calls == ["read_services"] * 3
    # A bad address is the whole read's error, never an answer.
    path.write_text(NAMED + "---\n" + LOCAL.replace("192.0.2.9", "127.0.0.1"))
    with pytest.raises(AnsibleFilterError, match="127.0.0.1"):
        podnet_services_checked(str(path), [], {}, memo_dir=memo)


def test_a_state_another_python_kept_or_broken_is_no_state(tmp_path, counted, monkeypatch):
    """The check's state is this controller's cache (marshal, stamped with the Python that
    wrote it): a state from another Python, or broken, reads as none, and the file is read
    whole, to the same result. A state as earlier podnet kept it (JSON) goes."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    calls, _warnings = counted
    memo, path = tmp_path / "memo", tmp_path / "services.yml"
    (memo / "services-checked.state.json").parent.mkdir()
    (memo / "services-checked.state.json").write_text("{}")
    path.write_text(NAMED + "---\n" + LOCAL)
    podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
    state = memo / "services-checked.state"
    assert filters._read_state(state)["state"]["recheck"]["chunks"]
    assert not (memo / "services-checked.state.json").exists()
    kept = state.read_bytes()
    for n, (broken, stamp) in enumerate([(b"garbage", None), (kept[:len(kept) // 2], None),
                                         (kept, filters.STATE_FORMAT + " another")]):
        if stamp:
            monkeypatch.setattr(filters, "STATE_FORMAT", stamp)
        state.write_bytes(broken)
        path.write_text(NAMED + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.%d" % (n + 10)))
        assert podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo)) == \
            podnet_services_checked(str(path), DECLARED, {})
        assert calls.count("read_services") == 1 + 2 * (n + 1)


def test_a_refused_file_is_never_remembered(tmp_path, counted):
    calls, _warnings = counted
    path = tmp_path / "services.yml"
    path.write_text("apiVersion: v1\nkind: Pod\n")
    for _ in range(2):
        with pytest.raises(AnsibleFilterError, match="kind Pod"):
            podnet_services_checked(str(path), [], memo_dir=str(tmp_path / "memo"))
    assert calls == ["read_services"] * 2
    assert not (tmp_path / "memo" / "services-checked.json").exists()


def test_policies_checked_is_remembered_too(tmp_path, counted):
    calls, _warnings = counted
    (tmp_path / "policies.yml").write_text(POLICY)
    args = ([str(tmp_path / "policies.yml")], [], "10.244.0.0/16", "services.yml")
    first = podnet_policies_checked(*args, memo_dir=str(tmp_path))
    assert podnet_policies_checked(*args, memo_dir=str(tmp_path)) == first
    (tmp_path / "policies.yml").write_text(POLICY.replace("deny", "deny-all"))
    assert "deny-all" in podnet_policies_checked(*args, memo_dir=str(tmp_path))
    assert calls == ["read_policies"] * 2


def _policies(count, changed=False):
    """`count` NetworkPolicies p0, p1, ...; `changed`: p1's port moves."""
    return "---\n".join(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p%d}\nspec:\n"
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {}}]\n"
        "    ports: [{port: %d}]\n" % (i, 81 if changed and i == 1 else 80) for i in range(count))


def test_one_policy_changed_is_the_only_one_resolved_again(tmp_path, monkeypatch):
    """Both memos that resolve the policies (the plan's check, against the declared pods; the
    policy play, against the running ones) resolve again only the policies that changed,
    under the same pods and Namespaces; other pods or Namespaces: every one. Each result is
    what resolving without a memo gives."""
    from ansible_collections.podnet.network.plugins.module_utils.policy import model as policy_model
    path, memo, cidr = tmp_path / "policies.yml", str(tmp_path / "memo"), "10.244.0.0/16"

    class Tagged(str):
        """As Ansible 2.19 hands a variable's strings: a str subclass (which marshal refuses)."""

    pods = [{"namespace": Tagged("default"), "name": Tagged("web-0"),
             "labels": {Tagged("app"): Tagged("web")}, "node": Tagged("node1"), "ip": Tagged("10.244.1.5"),
             "ports": []}]
    resolved = []
    real = policy_model._policy_model
    monkeypatch.setattr(policy_model, "_policy_model",
                        lambda policy, *args: resolved.append(policy["name"]) or real(policy, *args))

    def check(text, pods):
        """(the checked text, the policies the check resolved)"""
        path.write_text(text)
        resolved.clear()
        checked = podnet_policies_checked([str(path)], pods, cidr, "services.yml", memo)
        names = sorted(resolved)
        assert checked == podnet_policies_checked([str(path)], pods, cidr, "services.yml")
        return checked, names

    def resolve(checked, pods):
        """The policies the policy play's resolve resolved."""
        resolved.clear()
        text = podnet_resolve_policies(checked, pods, cidr, memo)
        names = sorted(resolved)
        assert json.loads(text) == podnet_resolve_policies(checked, pods, cidr)
        return names

    every = ["p0", "p1", "p2", "p3"]
    checked, names = check(_policies(4), pods)
    assert names == every and resolve(checked, pods) == every
    checked, names = check(_policies(4, changed=True), pods)
    assert names == ["p1"] and resolve(checked, pods) == ["p1"]
    more = pods + [dict(pods[0], name="web-1", ip="10.244.1.6")]
    checked, names = check(_policies(4), more)
    assert names == every and resolve(checked, more) == every
    labelled = _policies(4) + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"
    checked, names = check(labelled, more)
    assert names == every and resolve(checked, more) == every


def test_resolved_policies_and_each_nodes_table_are_remembered_as_text(tmp_path, monkeypatch):
    from ansible_collections.podnet.network.plugins.filter import podnet
    (tmp_path / "policies.yml").write_text(POLICY)
    checked = podnet_policies_checked([str(tmp_path / "policies.yml")], [], "10.244.0.0/16", "services.yml")
    running = [{"namespace": "default", "name": "web-0", "labels": {}, "node": "node1", "ip": "10.244.1.5",
                "ports": []}]
    direct = podnet_resolve_policies(checked, running, "10.244.0.0/16")
    memo = str(tmp_path / "memo")
    text = podnet_resolve_policies(checked, running, "10.244.0.0/16", memo)
    assert json.loads(text) == direct
    tables = {node: podnet.podnet_policy_table(text, node, "podnet-policy", memo)
              for node in ("node1", "node2")}
    assert tables == {node: podnet.podnet_policy_table(direct, node) for node in ("node1", "node2")}
    # Remembered: the same inputs again resolve and render nothing.
    calls = []
    real = podnet.policy_resolver
    monkeypatch.setattr(podnet, "policy_resolver", lambda *a, **k: calls.append("resolve") or real(*a, **k))
    monkeypatch.setattr(podnet, "render_table", lambda *a, **k: calls.append("render"))
    assert podnet_resolve_policies(checked, running, "10.244.0.0/16", memo) == text
    assert podnet.podnet_policy_table(text, "node1", "podnet-policy", memo) == tables["node1"]
    assert podnet.podnet_policy_table(text, "node2", "podnet-policy", memo) == tables["node2"]
    assert calls == []
    # Other pods: resolved again.
    podnet_resolve_policies(checked, running + [dict(running[0], name="web-1", ip="10.244.1.6")],
                            "10.244.0.0/16", memo)
    assert calls == ["resolve"]


def test_merge_allocations_reads_node_infos_text_and_the_first_node_wins():
    from ansible_collections.podnet.network.plugins.filter.podnet import podnet_merge_allocations
    hostvars = {
        "node1": {"podnet_node": {"persisted_service_allocations": json.dumps(
            {"default/web": {"cluster_ip": "10.96.0.20", "node_ports": {}}})}},
        "node2": {"podnet_node": {"persisted_service_allocations": json.dumps(
            {"default/web": {"cluster_ip": "10.96.0.99", "node_ports": {}},
             "default/db": {"cluster_ip": "10.96.0.30", "node_ports": {"TCP/5432": 30432}}})}},
        "node3": {"podnet_node": {"persisted_service_allocations": "{}"}},
        "node4": {},
    }
    assert podnet_merge_allocations(["node1", "node2", "node3", "node4"], hostvars) == {
        "default/web": {"cluster_ip": "10.96.0.20", "node_ports": {}},
        "default/db": {"cluster_ip": "10.96.0.30", "node_ports": {"TCP/5432": 30432}}}


def test_allocations_every_node_holds_alike_pass_as_text_and_check_the_same(tmp_path):
    from ansible_collections.podnet.network.plugins.filter.podnet import podnet_merge_allocations
    path = tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    first = podnet_services_checked(str(path), DECLARED, {})
    text = podnet_service_allocations(first, "")
    hostvars = {host: {"podnet_node": {"persisted_service_allocations": text}} for host in ("n1", "n2")}
    assert podnet_merge_allocations(["n1", "n2"], hostvars) == text  # as it is, not parsed
    memo = str(tmp_path / "memo")
    assert podnet_services_checked(str(path), DECLARED, text, memo_dir=memo) == first
    assert podnet_services_checked(str(path), DECLARED, json.loads(text), memo_dir=memo) == first
    assert podnet_services_checked(str(path), DECLARED, text) == first


def test_a_check_made_again_parses_only_the_documents_that_changed(tmp_path, monkeypatch):
    from ansible_collections.podnet.network.plugins.module_utils.common import manifests
    memo, path = tmp_path / "memo", tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    first = podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
    assert (memo / "services-checked.documents.json").exists()
    parsed = []
    real = manifests.parse_alone
    monkeypatch.setattr(manifests, "parse_alone", lambda chunk: parsed.append(chunk) or real(chunk))
    # A Service changed (an Endpoints alone is checked again apart: test_recheck.py).
    path.write_text(NAMED + "---\n" + LOCAL.replace("port: 82", "port: 83"))
    again = podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
    assert len(parsed) == 1 and "port: 83" in parsed[0]
    assert again == podnet_services_checked(str(path), DECLARED, {}) != first


def test_the_resolved_services_are_remembered_for_the_same_check_and_pods(tmp_path, monkeypatch):
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    path = tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    checked = podnet_services_checked(str(path), DECLARED, {})
    resolved = []
    real = filters.resolve_services
    monkeypatch.setattr(filters, "resolve_services", lambda *a, **k: resolved.append(1) or real(*a, **k))
    memo = str(tmp_path / "memo")
    first = filters.podnet_resolve_services(checked, DECLARED, memo)
    again, unremembered = (filters.podnet_resolve_services(checked, DECLARED, memo),
                           filters.podnet_resolve_services(checked, DECLARED))
    assert is_reference(first) and again == first and text_of(first) == unremembered
    assert len(resolved) == 2  # the second call was remembered; the third had no memo
    filters.podnet_resolve_services(checked, [], memo)  # other pods: resolved again
    assert len(resolved) == 3
    assert not (tmp_path / "memo" / "services-resolved.documents.json").exists()


def test_node_pods_names_a_node_whose_pods_play_did_not_run():
    """A node with no pods has an empty record; one without a record is a run that left out
    the test pods' play, where Services would silently get no endpoints."""
    hostvars = {"n1": {"podnet_test_pods_node_pods": {"default/a": {"name": "a", "ip": "10.244.0.2"}}},
                "n2": {"podnet_test_pods_node_pods": {}}, "n3": {}}
    assert podnet_node_pods(["n1", "n2"], hostvars) == [{"name": "a", "ip": "10.244.0.2", "node": "n1"}]
    with pytest.raises(AnsibleFilterError, match="n3 has no record of the pods it runs: run playbooks/plan"):
        podnet_node_pods(["n1", "n2", "n3"], hostvars)


def test_services_resolve_and_delta_service_by_service_as_whole_ones(tmp_path, monkeypatch):
    """With the plan's memo, a run after one endpoint moved resolves that Service alone and
    finds the delta without parsing either model: the same texts as doing it whole."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    memo, path = str(tmp_path / "memo"), tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    checked = podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    model = podnet_resolve_services(checked, RUNNING, memo)
    assert model == compact(resolve_services(json.loads(checked), RUNNING))
    assert podnet_services_delta(model, memo) == ""  # no earlier model yet
    resolved = []
    real = filters.resolve_service
    monkeypatch.setattr(filters, "resolve_service", lambda *a: resolved.append(a[0]["name"]) or real(*a))
    monkeypatch.setattr(filters, "delta_from", lambda *a: pytest.fail("a model was parsed for the delta"))
    path.write_text(NAMED + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.8"))
    checked = podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    again = podnet_resolve_services(checked, RUNNING, memo)
    assert resolved == ["loc"]
    assert again == compact(resolve_services(json.loads(checked), RUNNING)) != model
    assert json.loads(podnet_services_delta(again, memo)) == delta_from(model, json.loads(again))
    assert podnet_services_delta(again, memo) == ""  # the same model again
    # Other pods: every Service resolved again, the same as whole.
    moved = [dict(RUNNING[0], ip="10.244.0.6")]
    monkeypatch.setattr(filters, "delta_from", delta_from)
    other = podnet_resolve_services(checked, moved, memo)
    assert other == compact(resolve_services(json.loads(checked), moved))
    assert json.loads(podnet_services_delta(other, memo)) == delta_from(again, json.loads(other))


def test_the_allocations_file_holds_one_service_per_line_and_reads_back(tmp_path):
    path = tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + LOCAL)
    text = podnet_service_allocations(podnet_services_checked(str(path), DECLARED, {}), "")
    written = podnet_allocations_file(text)
    assert json.loads(written) == json.loads(text)
    lines = written.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == 2 + len(json.loads(text))
    assert [line.split('"')[1] for line in lines[1:-1]] == sorted(json.loads(text))
    assert json.loads(podnet_allocations_file("{}")) == {}


def test_policies_are_not_read_again_when_only_services_endpoints_changed(tmp_path, counted):
    """The policy reader's view of the services file leaves out the pieces that hold one
    Service, Endpoints or EndpointSlice: an endpoint moved changes nothing it reads; a
    policy moved to another line (a Service above it grew) does."""
    calls, _warnings = counted
    memo, path = str(tmp_path / "memo"), tmp_path / "services.yml"

    def check(text):
        path.write_text(text)
        podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
        return podnet_policies_checked([str(path)], DECLARED, services_file=str(path), memo_dir=memo)

    first = check(NAMED + "---\n" + POLICY + "---\n" + LOCAL)
    assert calls == ["read_services", "read_policies"]
    moved = check(NAMED + "---\n" + POLICY + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.8"))
    assert calls == ["read_services", "read_policies"] and moved == first
    assert moved == podnet_policies_checked([str(path)], DECLARED, services_file=str(path))
    calls.clear()
    grown = NAMED.replace("metadata: {name: web}", "metadata:\n  name: web")
    check(grown + "---\n" + POLICY + "---\n" + LOCAL)
    assert calls == ["read_services", "read_policies"]


def test_the_policies_view_of_an_unchanged_file_is_not_split_again(tmp_path, monkeypatch):
    """A no-op run keys the policies by the view it kept for that very file."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    memo, path = str(tmp_path / "memo"), tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + POLICY + "---\n" + LOCAL)
    first = podnet_policies_checked([str(path)], DECLARED, services_file=str(path), memo_dir=memo)
    split = []
    real = filters.chunks
    monkeypatch.setattr(filters, "chunks", lambda text: split.append(1) or real(text))
    assert podnet_policies_checked([str(path)], DECLARED, services_file=str(path), memo_dir=memo) == first
    assert split == []
    path.write_text(NAMED + "---\n" + POLICY + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.8"))
    assert podnet_policies_checked([str(path)], DECLARED, services_file=str(path), memo_dir=memo) == first
    assert split == [1]


@pytest.mark.parametrize("services_first", [True, False])
def test_the_plans_two_readers_split_the_services_file_once(tmp_path, monkeypatch, services_first):
    """The plan's task checks the Services and the policies in one process, in whichever
    order Ansible templates them: a changed file is split once for both, and the policies'
    view of it is the one a process of its own would take."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    from ansible_collections.podnet.network.plugins.module_utils.common import manifests
    memo, path = str(tmp_path / "memo"), tmp_path / "services.yml"
    path.write_text(NAMED + "---\n" + POLICY + "---\n" + LOCAL)
    podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    first = podnet_policies_checked([str(path)], DECLARED, services_file=str(path), memo_dir=memo)
    real = manifests._split
    for text in (NAMED + "---\n" + POLICY + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.8"),
                 NAMED + "---\n" + LOCAL + "---\n" + POLICY):
        path.write_text(text)
        split = []
        monkeypatch.setattr(manifests, "_split", lambda text, split=split: split.append(1) or real(text))
        readers = [lambda: podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo),
                   lambda: podnet_policies_checked([str(path)], DECLARED, services_file=str(path),
                                                   memo_dir=memo)]
        for reader in readers if services_first else readers[::-1]:
            reader()
        assert split == [1]
        monkeypatch.setattr(manifests, "_split", real)
        data = path.read_bytes()
        taken = filters._policy_view(memo, data)
        (tmp_path / "memo" / "policies-view.json").unlink()
        monkeypatch.setattr(manifests, "_LAST_SPLIT", [None, None])
        assert filters._policy_view(memo, data) == taken
    # The policy moved below the Endpoints: read again, where it now stands.
    moved = podnet_policies_checked([str(path)], DECLARED, services_file=str(path), memo_dir=memo)
    assert moved != first and moved == podnet_policies_checked([str(path)], DECLARED, services_file=str(path))


def test_with_a_memo_the_services_pass_from_task_to_task_by_reference(tmp_path):
    """With a memo directory the plan's check and the resolve return a reference to the text
    they kept (tens of MB at scale stay out of Ansible's variables); the filters after them
    take the reference as they take the text, to the same results. A reference whose text
    was written over since is an error that says to run again, never another text."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    memo, path = str(tmp_path / "memo"), tmp_path / "services.yml"
    results = {}
    for where in (memo, str(tmp_path / "other")):
        for text in (NAMED + "---\n" + LOCAL, NAMED + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.8")):
            path.write_text(text)
            checked = filters.podnet_services_checked(str(path), DECLARED, {}, memo_dir=where)
            model = filters.podnet_resolve_services(checked if where == memo else text_of(checked), RUNNING,
                                                    where)
            assert is_reference(checked) and is_reference(model)
            results.setdefault(where, []).append([
                text_of(checked), text_of(model),
                filters.podnet_service_allocations(checked if where == memo else text_of(checked), where),
                filters.podnet_services_delta(model if where == memo else text_of(model), where)])
    assert results[memo] == results[str(tmp_path / "other")]
    assert results[memo][1][3] != ""  # a delta from the first model
    assert text_of(checked) == filters.podnet_services_checked(str(path), DECLARED, {})  # no memo: text
    # Another run with other inputs (two at once, one inventory) keeps its own text: this
    # run's reference still reads its own. Written over, it is an error.
    earlier = filters.podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    path.write_text(NAMED)
    other = filters.podnet_services_checked(str(path), DECLARED, {}, memo_dir=memo)
    assert text_of(other) != text_of(earlier)
    assert text_of(earlier) == results[memo][1][0]
    kept = earlier.split(":", 2)[2]
    pathlib.Path(kept).write_text(text_of(earlier).replace("10.96", "10.97"))
    with pytest.raises(MemoReferenceError, match="run the plays again"):
        text_of(earlier)
    for use in (lambda ref: filters.podnet_resolve_services(ref, RUNNING),
                filters.FilterModule().filters()["memo_text"]):
        with pytest.raises(AnsibleFilterError, match="no longer holds the text this run made"):
            use(earlier)


def test_the_memo_keeps_the_last_text_and_the_last_hours_few_others(tmp_path):
    """Texts another run may still read are kept a while: the last one always, others from
    the last hour only, and no more than TEXTS_KEPT of them."""
    from ansible_collections.podnet.network.plugins.filter import podnet as filters
    memo, path = tmp_path / "memo", tmp_path / "services.yml"
    made = []
    for number in range(filters.TEXTS_KEPT + 3):
        path.write_text(NAMED + "---\n" + LOCAL.replace("192.0.2.9", "192.0.2.%d" % (number + 10)))
        ref = filters.podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo))
        made.append(ref.split(":", 2)[2])
    kept = sorted(str(p) for p in memo.glob("services-checked.*.txt"))
    assert kept == sorted(made[-1 - filters.TEXTS_KEPT:])
    old = made[-1 - filters.TEXTS_KEPT]
    os.utime(old, (time.time() - 7200,) * 2)
    path.write_text(NAMED)
    newest = filters.podnet_services_checked(str(path), DECLARED, {}, memo_dir=str(memo)).split(":", 2)[2]
    assert old not in {str(p) for p in memo.glob("services-checked.*.txt")}
    assert newest in {str(p) for p in memo.glob("services-checked.*.txt")}
