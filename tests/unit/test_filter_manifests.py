"""The filter plugin reads the manifest files itself, one way for both readers."""

import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.podnet.network.plugins.filter.podnet import (
    podnet_policy_model,
    podnet_resolve_services,
    podnet_service_allocations,
    podnet_services_checked,
    podnet_services_model,
)
from ansible_collections.podnet.network.plugins.module_utils.common import manifests

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
