"""The filter plugin reads the manifest files itself, one way for both readers."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.podnet.network.plugins.filter.podnet import (
    podnet_policy_model,
    podnet_services_model,
)

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
