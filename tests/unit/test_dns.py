"""Service DNS: the records and dnsmasq configuration rendered from a services model."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    DnsConfigError,
    build_records,
    decode_response,
    encode_query,
    render_auth_conf,
    render_front_conf,
    render_instance,
    render_table,
    reverse_subnets,
    reverse_zone,
    same_listing,
    settings_from,
    table_port,
    upstream_servers,
    zone_lines,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.resolv import render_resolv_conf

D = "cluster.local"


def endpoint(ip, port, node="node1"):
    return {"ip": ip, "port": port, "node": node, "pod": None}


def service(name, namespace="default", cluster_ip=None, ports=(), type_="ClusterIP", external_name=None):
    return {"namespace": namespace, "name": name, "type": type_, "cluster_ip": cluster_ip,
            "external_name": external_name, "ports": list(ports)}


def port(name, number, endpoints=(), protocol="TCP"):
    return {"name": name, "protocol": protocol, "port": number, "target_port": number,
            "node_port": None, "endpoints": list(endpoints)}


MODEL = {
    "cluster_cidr": "10.244.0.0/16",
    "service_cidr": "10.96.0.0/12",
    "services": [
        service("frontend", cluster_ip="10.96.0.20",
                ports=[port("http", 80, [endpoint("10.244.1.5", 8080)]), port("dns", 53, protocol="UDP")]),
        service("plain", cluster_ip="10.96.0.21", ports=[port("", 80)]),
        service("web", ports=[port("http", 80, [endpoint("10.244.2.7", 8080),
                                                endpoint("10.244.1.5", 8080)])]),
        service("db", namespace="data", type_="ExternalName", external_name="db.example.com."),
        service("outside", ports=[port("", 443, [endpoint("203.0.113.10", 443, None)])]),
    ],
}
SETTINGS = settings_from(MODEL, D, "10.96.0.10", 5)

# The whole contract, as a reviewer reads it: every record of the zone.
ZONE = [
    "10-244-1-5.web.default.svc.cluster.local. 5 IN A 10.244.1.5",
    "10-244-2-7.web.default.svc.cluster.local. 5 IN A 10.244.2.7",
    "10.0.96.10.in-addr.arpa. 5 IN PTR kube-dns.kube-system.svc.cluster.local.",
    "10.113.0.203.in-addr.arpa. 5 IN PTR 203-0-113-10.outside.default.svc.cluster.local.",
    "20.0.96.10.in-addr.arpa. 5 IN PTR frontend.default.svc.cluster.local.",
    "203-0-113-10.outside.default.svc.cluster.local. 5 IN A 203.0.113.10",
    "21.0.96.10.in-addr.arpa. 5 IN PTR plain.default.svc.cluster.local.",
    "5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.web.default.svc.cluster.local.",
    "7.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-7.web.default.svc.cluster.local.",
    "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 "
    "kube-dns.kube-system.svc.cluster.local.",
    "_dns._udp.frontend.default.svc.cluster.local. 5 IN SRV 0 100 53 frontend.default.svc.cluster.local.",
    "_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 "
    "kube-dns.kube-system.svc.cluster.local.",
    "_http._tcp.frontend.default.svc.cluster.local. 5 IN SRV 0 100 80 frontend.default.svc.cluster.local.",
    "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 50 8080 10-244-1-5.web.default.svc.cluster.local.",
    "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 50 8080 10-244-2-7.web.default.svc.cluster.local.",
    "db.data.svc.cluster.local. 5 IN CNAME db.example.com.",
    "frontend.default.svc.cluster.local. 5 IN A 10.96.0.20",
    "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10",
    "outside.default.svc.cluster.local. 5 IN A 203.0.113.10",
    "plain.default.svc.cluster.local. 5 IN A 10.96.0.21",
    "web.default.svc.cluster.local. 5 IN A 10.244.1.5",
    "web.default.svc.cluster.local. 5 IN A 10.244.2.7",
]


def test_every_record_kind():
    assert zone_lines(build_records(MODEL, D, "10.96.0.10"), 5) == ZONE


def test_unnamed_ports_have_no_srv():
    lines = zone_lines(build_records(MODEL, D, "10.96.0.10"), 5)
    assert not [line for line in lines if "SRV" in line and ("plain." in line or "outside." in line)]


def test_headless_without_endpoints_has_no_records():
    model = dict(MODEL, services=[service("empty", ports=[port("http", 80)])])
    assert [line for line in zone_lines(build_records(model, D, "10.96.0.10"), 5) if "empty" in line] == []


def test_a_headless_service_without_ports_answers_its_pods_addresses():
    model = dict(MODEL, services=[dict(service("peers", ports=[]), addresses=["10.244.1.5", "10.244.2.7"])])
    lines = [line for line in zone_lines(build_records(model, D, "10.96.0.10"), 5) if "peers" in line]
    assert lines == [
        "10-244-1-5.peers.default.svc.cluster.local. 5 IN A 10.244.1.5",
        "10-244-2-7.peers.default.svc.cluster.local. 5 IN A 10.244.2.7",
        "5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.peers.default.svc.cluster.local.",
        "7.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-7.peers.default.svc.cluster.local.",
        "peers.default.svc.cluster.local. 5 IN A 10.244.1.5",
        "peers.default.svc.cluster.local. 5 IN A 10.244.2.7",
    ]


def test_a_kube_dns_service_of_the_file_replaces_the_built_in_one():
    model = dict(MODEL, services=[service("kube-dns", "kube-system", "10.96.0.53", [port("dns", 53)])])
    lines = zone_lines(build_records(model, D, "10.96.0.10"), 5)
    assert "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.53" in lines
    assert not [line for line in lines if "10.96.0.10" in line]


def test_auth_conf():
    conf = render_auth_conf(build_records(MODEL, D, "10.96.0.10"), SETTINGS, 10053)
    lines = conf.splitlines()
    assert lines[0].startswith("# Managed by podnet")
    assert "port=10053" in lines and "listen-address=127.0.0.1" in lines and "no-resolv" in lines
    assert "auth-server=kube-dns.kube-system.svc.cluster.local,127.0.0.1" in lines
    zone = [line for line in lines if line.startswith("auth-zone=")]
    # /12 cut into sixteen /16 reverse zones; the outside endpoint let in as a /32.
    assert zone == ["auth-zone=cluster.local," + ",".join(f"10.{n}.0.0/16" for n in range(96, 112))
                    + ",10.244.0.0/16,203.0.113.10/32"]
    assert "auth-ttl=5" in lines
    assert ("host-record=10-244-1-5.web.default.svc.cluster.local,web.default.svc.cluster.local,"
            "10.244.1.5") in lines
    assert ("srv-host=_http._tcp.frontend.default.svc.cluster.local,frontend.default.svc.cluster.local,"
            "80,0,100") in lines
    assert "cname=db.data.svc.cluster.local,db.example.com" in lines


def test_front_conf():
    conf = render_front_conf(SETTINGS, 10054, ["192.168.56.1", "192.0.2.1#5353"])
    lines = conf.splitlines()
    assert "listen-address=10.96.0.10" in lines and "port=10054" in lines and "no-negcache" in lines
    assert "server=/cluster.local/127.0.0.1#10054" in lines
    assert "server=/96.10.in-addr.arpa/127.0.0.1#10054" in lines
    assert "server=/244.10.in-addr.arpa/127.0.0.1#10054" in lines
    assert lines[-2:] == ["server=192.168.56.1", "server=192.0.2.1#5353"]


def test_rendering_is_deterministic():
    shuffled = dict(MODEL, services=list(reversed(MODEL["services"])))
    assert render_instance(MODEL, SETTINGS, 10053, ["192.168.56.1"]) == render_instance(
        shuffled, SETTINGS, 10053, ["192.168.56.1"])


def test_the_diff_shows_the_records_that_change():
    before = zone_lines(build_records(MODEL, D, "10.96.0.10"), 5)
    model = dict(MODEL, services=MODEL["services"] + [service("extra", cluster_ip="10.96.0.30",
                                                              ports=[port("web", 8443)])])
    after = zone_lines(build_records(model, D, "10.96.0.10"), 5)
    assert sorted(set(after) - set(before)) == [
        "30.0.96.10.in-addr.arpa. 5 IN PTR extra.default.svc.cluster.local.",
        "_web._tcp.extra.default.svc.cluster.local. 5 IN SRV 0 100 8443 extra.default.svc.cluster.local.",
        "extra.default.svc.cluster.local. 5 IN A 10.96.0.30",
    ]
    assert set(before) <= set(after)


def test_reverse_zones():
    assert [reverse_zone(s) for s in reverse_subnets(["10.96.0.0/12"])][:2] == ["96.10.in-addr.arpa",
                                                                              "97.10.in-addr.arpa"]
    assert [reverse_zone(s) for s in reverse_subnets(["10.244.0.0/16", "192.168.1.0/24"])] == [
        "244.10.in-addr.arpa", "1.168.192.in-addr.arpa"]
    assert [str(s) for s in reverse_subnets(["10.0.0.0/7"])] == ["10.0.0.0/8", "11.0.0.0/8"]


def test_table_is_nft_listing_and_knows_its_port():
    content = render_table("podnet-dns", "10.96.0.10", 10054)
    assert "ip daddr 10.96.0.10 udp dport 53 dnat to 10.96.0.10:10054" in content
    assert "type nat hook output priority -100; policy accept;" in content
    assert table_port(content, "10.96.0.10") == 10054
    listed = content.replace("\t", "        ").replace("\t}\n\n", "}\n")
    assert same_listing(listed, content)
    assert not same_listing(content.replace("10054", "10053"), content)


@pytest.mark.parametrize("change, message", [
    ({"dns_ip": "10.200.0.10"}, "not a usable address of the service CIDR"),
    ({"dns_ip": "10.96.0.0"}, "not a usable address"),
    ({"dns_ip": "nonsense"}, "not an IPv4 address"),
    ({"domain": "bad_domain!"}, "is not a DNS name"),
    ({"ttl": -1}, "ttl -1"),
])
def test_settings_errors(change, message):
    args = {"domain": D, "dns_ip": "10.96.0.10", "ttl": 5} | change
    with pytest.raises(DnsConfigError, match=message):
        settings_from(MODEL, args["domain"], args["dns_ip"], args["ttl"])


def test_model_errors_name_the_service():
    taken = dict(MODEL, services=[service("grabby", cluster_ip="10.96.0.10", ports=[port("", 53)])])
    with pytest.raises(DnsConfigError, match="Service default/grabby: clusterIP 10.96.0.10 is the cluster"):
        build_records(taken, D, "10.96.0.10")
    bad = dict(MODEL, services=[service("x", type_="ExternalName", external_name="not a name")])
    with pytest.raises(DnsConfigError, match="Service default/x: externalName 'not a name'"):
        build_records(bad, D, "10.96.0.10")


def test_upstreams():
    assert upstream_servers(["192.168.56.1", "192.0.2.1:5353", "192.0.2.2#53"], None, "10.96.0.10") == [
        "192.168.56.1", "192.0.2.1#5353", "192.0.2.2"]
    resolv = "# comment\nnameserver 10.96.0.10\nnameserver 192.168.1.1\nnameserver ::1\nsearch lan\n"
    assert upstream_servers([], resolv, "10.96.0.10") == ["192.168.1.1"]
    with pytest.raises(DnsConfigError, match="no upstream DNS server"):
        upstream_servers([], "nameserver 10.96.0.10\n", "10.96.0.10")
    with pytest.raises(DnsConfigError, match="is the cluster DNS address itself"):
        upstream_servers(["10.96.0.10"], None, "10.96.0.10")
    with pytest.raises(DnsConfigError, match="not an IPv4 address"):
        upstream_servers(["dns.example"], None, "10.96.0.10")


def test_query_round_trip():
    query = encode_query("frontend.default.svc.cluster.local", "A", qid=7)
    # A reply: the question, then one A record whose name points back at it (compression).
    reply = bytearray(query)
    reply[2:4] = (0x8580).to_bytes(2, "big")          # QR, AA, RD, RA
    reply[6:8] = (1).to_bytes(2, "big")
    reply += bytes.fromhex("c00c 0001 0001 00000005 0004 0a600014".replace(" ", ""))
    decoded = decode_response(bytes(reply))
    assert decoded == {"id": 7, "rcode": 0, "aa": True,
                       "answers": [("frontend.default.svc.cluster.local.", "A", 5, "10.96.0.20")]}


def test_pod_resolv_conf():
    assert render_resolv_conf("10.96.0.10", "x", D) == (
        "nameserver 10.96.0.10\n"
        "search x.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")
