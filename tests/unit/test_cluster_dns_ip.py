"""The cluster DNS address is decided in one place: dns.records.cluster_dns_ip.

The plan calls it (through the cluster_dns_ip filter) and publishes podnet_plan_cluster_dns_ip;
podnet_dns and the test pods' resolv.conf read that fact. The literals below are the expected
values of the convention (kubeadm's: the service CIDR's tenth address)."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    DnsConfigError,
    cluster_dns_ip,
    settings_from,
)


@pytest.mark.parametrize("service_cidr, dns_ip, expected", [
    ("10.96.0.0/12", None, "10.96.0.10"),      # Kubernetes' default service CIDR: kube-dns's address
    ("10.96.0.0/12", "", "10.96.0.10"),        # an empty inventory value means "derive it"
    ("10.100.0.0/16", None, "10.100.0.10"),    # follows the service CIDR
    ("172.20.0.0/28", None, "172.20.0.10"),
    ("10.96.0.0/12", "10.96.0.53", "10.96.0.53"),  # the inventory's podnet_dns_ip wins
])
def test_cluster_dns_ip(service_cidr, dns_ip, expected):
    assert cluster_dns_ip(service_cidr, dns_ip) == expected


@pytest.mark.parametrize("service_cidr, dns_ip, message", [
    ("10.96.0.0/29", None, "has no address 10 for the cluster DNS"),
    ("10.96.0.0/12", "10.200.0.10", "not a usable address of the service CIDR"),
    ("10.96.0.0/12", "nonsense", "not an IPv4 address"),
])
def test_cluster_dns_ip_errors(service_cidr, dns_ip, message):
    with pytest.raises(DnsConfigError, match=message):
        cluster_dns_ip(service_cidr, dns_ip)


def test_module_without_dns_ip_derives_the_same_address():
    model = {"service_cidr": "10.100.0.0/16", "cluster_cidr": "10.244.0.0/16", "services": []}
    assert settings_from(model, "cluster.local", None, 5)["dns_ip"] == "10.100.0.10"
