"""Services model: Kubernetes manifests in, the services model of docs/services.md out."""

import json
import textwrap

import pytest
from ansible_collections.podnet.network.plugins.module_utils.services.model import (
    ServiceSpecError,
    allocations,
    load_services,
)

FILE = "services.yml"
MYAPP = {"app.kubernetes.io/name": "MyApp"}


def pod(name, labels, ports=(), ip=None, node="node1", namespace="default"):
    return {"namespace": namespace, "name": name, "labels": dict(labels), "ip": ip, "node": node,
            "ports": [dict(p, protocol=p.get("protocol", "TCP")) for p in ports]}


PODS = [
    pod("myapp-0", MYAPP, [{"name": "http", "containerPort": 9376}], "10.244.2.7", "node2"),
    pod("myapp-1", MYAPP, [{"name": "http", "containerPort": 9376}], "10.244.1.5", "node1"),
    pod("web-0", {"app": "web", "tier": "front"}, [{"name": "http", "containerPort": 8080},
                                                   {"name": "dns", "containerPort": 53, "protocol": "UDP"}],
        "10.244.1.10", "node1"),
    pod("web-1", {"app": "web", "tier": "front"}, [{"name": "http", "containerPort": 8081},
                                                   {"name": "dns", "containerPort": 5353, "protocol": "UDP"}],
        "10.244.1.9", "node2"),
    pod("web-2", {"app": "web"}, [{"name": "http", "containerPort": 9000}], "10.244.3.2", "node3"),
    pod("web-prod", {"app": "web"}, [{"name": "http", "containerPort": 80}], "10.244.3.3", "node3", "prod"),
]


def load(text, pods=PODS, **kwargs):
    return load_services(textwrap.dedent(text), FILE, pods, **kwargs)


def service(model, name, namespace="default"):
    return next(s for s in model["services"] if (s["namespace"], s["name"]) == (namespace, name))


def ep(ip, port, node=None, pod=None):
    return {"ip": ip, "port": port, "node": node, "pod": pod}


def svc(spec, name="web", namespace="default"):
    """A one-line-per-field Service document for the tables (4 lines)."""
    return ("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec: %s\n"
            % (name, namespace, spec))


# --- the manifests of the Kubernetes documentation, unchanged ----------------------

def test_kubernetes_docs_clusterip_service_gives_the_whole_model():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          selector:
            app.kubernetes.io/name: MyApp
          ports:
            - protocol: TCP
              port: 80
              targetPort: 9376
        """)
    assert model == {
        "cluster_cidr": "10.244.0.0/16",
        "service_cidr": "10.96.0.0/12",
        "node_port_range": [30000, 32767],
        "services": [{
            "namespace": "default", "name": "my-service", "type": "ClusterIP", "cluster_ip": "10.96.0.11",
            "external_name": None, "external_ips": [], "external_traffic_policy": "Cluster",
            "internal_traffic_policy": "Cluster",
            "session_affinity_timeout": None,
            "ports": [{"name": "", "protocol": "TCP", "port": 80, "node_port": None, "target_port": 9376,
                       "endpoints": [ep("10.244.1.5", 9376, "node1", "default/myapp-1"),
                                     ep("10.244.2.7", 9376, "node2", "default/myapp-0")]}],
        }],
    }
    assert json.loads(json.dumps(model)) == model


def test_kubernetes_docs_nodeport_service():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          type: NodePort
          selector:
            app.kubernetes.io/name: MyApp
          ports:
            - port: 80
              # By default and for convenience, the `targetPort` is set to
              # the same value as the `port` field.
              targetPort: 80
              # Optional field
              # By default and for convenience, the Kubernetes control plane
              # will allocate a port from a range (default: 30000-32767)
              nodePort: 30007
        """)
    [port] = service(model, "my-service")["ports"]
    assert (port["node_port"], port["target_port"]) == (30007, 80)
    assert [e["ip"] for e in port["endpoints"]] == ["10.244.1.5", "10.244.2.7"]
    assert service(model, "my-service")["cluster_ip"] == "10.96.0.11"


def test_kubernetes_docs_multi_port_service():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          selector:
            app.kubernetes.io/name: MyApp
          ports:
            - name: http
              protocol: TCP
              port: 80
              targetPort: 9376
            - name: https
              protocol: TCP
              port: 443
              targetPort: 9377
        """)
    ports = service(model, "my-service")["ports"]
    assert [(p["name"], p["port"], p["target_port"]) for p in ports] == [
        ("http", 80, 9376), ("https", 443, 9377)]
    # a numbered targetPort is used on every selected pod, declared or not (as in Kubernetes)
    assert [(e["ip"], e["port"]) for e in ports[1]["endpoints"]] == [
        ("10.244.1.5", 9377), ("10.244.2.7", 9377)]


def test_kubernetes_docs_named_target_port():
    pods = [pod("proxy", {"app.kubernetes.io/name": "proxy"}, [{"name": "http-web-svc", "containerPort": 80}],
                "10.244.1.2")]
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: nginx-service
        spec:
          selector:
            app.kubernetes.io/name: proxy
          ports:
          - name: name-of-service-port
            protocol: TCP
            port: 80
            targetPort: http-web-svc
        """, pods)
    [port] = service(model, "nginx-service")["ports"]
    assert port["target_port"] == "http-web-svc"
    assert port["endpoints"] == [ep("10.244.1.2", 80, "node1", "default/proxy")]


def test_kubernetes_docs_service_without_selector_and_its_endpoint_slice():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          ports:
            - name: http
              protocol: TCP
              port: 80
              targetPort: 9376
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: my-service-1 # by convention, use the name of the Service
                             # as a prefix for the name of the EndpointSlice
          labels:
            # You should set the "kubernetes.io/service-name" label.
            # Set its value to match metadata.name of the
            # Service
            kubernetes.io/service-name: my-service
        addressType: IPv4
        ports:
          - name: http # should match with the name of the service port defined above
            appProtocol: http
            protocol: TCP
            port: 9376
        endpoints:
          - addresses:
              - "10.4.5.6"
          - addresses:
              - "10.1.2.3"
        """)
    [port] = service(model, "my-service")["ports"]
    assert port["endpoints"] == [ep("10.1.2.3", 9376), ep("10.4.5.6", 9376)]


def test_kubernetes_docs_service_without_selector_and_its_endpoints():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          ports:
            - protocol: TCP
              port: 80
              targetPort: 9376
        ---
        apiVersion: v1
        kind: Endpoints
        metadata:
          # the name here should match the name of the Service
          name: my-service
        subsets:
          - addresses:
              - ip: 192.0.2.42
            ports:
              - port: 9376
        """)
    assert service(model, "my-service")["ports"][0]["endpoints"] == [ep("192.0.2.42", 9376)]


def test_kubernetes_docs_external_name_service():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
          namespace: prod
        spec:
          type: ExternalName
          externalName: my.database.example.com
        """)
    assert service(model, "my-service", "prod") == {
        "namespace": "prod", "name": "my-service", "type": "ExternalName", "cluster_ip": None,
        "external_name": "my.database.example.com", "external_ips": [], "external_traffic_policy": "Cluster",
        "internal_traffic_policy": "Cluster",
        "session_affinity_timeout": None, "ports": []}


def test_kubernetes_docs_load_balancer_is_a_node_port_service_and_status_is_ignored():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          selector:
            app.kubernetes.io/name: MyApp
          ports:
            - protocol: TCP
              port: 80
              targetPort: 9376
          clusterIP: 10.0.171.239
          type: LoadBalancer
        status:
          loadBalancer:
            ingress:
            - ip: 192.0.2.127
        """, service_cidr="10.0.0.0/16")
    lb = service(model, "my-service")
    assert (lb["type"], lb["cluster_ip"]) == ("LoadBalancer", "10.0.171.239")
    assert lb["ports"][0]["node_port"] == 30000
    assert len(lb["ports"][0]["endpoints"]) == 2


def test_kubernetes_docs_external_ips():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: my-service
        spec:
          selector:
            app.kubernetes.io/name: MyApp
          ports:
            - name: http
              protocol: TCP
              port: 80
              targetPort: 49152
          externalIPs:
            - 198.51.100.32
        """)
    assert service(model, "my-service")["external_ips"] == ["198.51.100.32"]


# --- Service features -------------------------------------------------------------

def test_node_port_with_local_external_traffic_policy():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata: {name: frontend}
        spec:
          type: NodePort
          externalTrafficPolicy: Local
          internalTrafficPolicy: Local
          selector: {app: web, tier: front}
          ports:
          - {name: http, port: 80, targetPort: http, nodePort: 31380}
        """)
    frontend = service(model, "frontend")
    assert (frontend["external_traffic_policy"], frontend["internal_traffic_policy"]) == ("Local", "Local")
    assert frontend["ports"][0]["node_port"] == 31380
    assert allocations(model) == {"default/frontend": {"cluster_ip": "10.96.0.11",
                                                       "node_ports": {"TCP/80": 31380}}}


def test_external_traffic_policy_on_a_cluster_ip_service_with_external_ips():
    model = load(svc("{selector: {app: web}, externalIPs: [198.51.100.10, 198.51.100.10], "
                     "externalTrafficPolicy: Local, ports: [{port: 80}]}"))
    web = service(model, "web")
    assert (web["external_ips"], web["external_traffic_policy"]) == (["198.51.100.10"], "Local")


def test_headless_service_has_no_cluster_ip_but_lists_endpoints():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata: {name: db}
        spec:
          clusterIP: None
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: peers}
        spec: {clusterIP: None}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {selector: {app: web}, ports: [{port: 80}]}
        """)
    db = service(model, "db")
    assert db["cluster_ip"] is None
    assert [(e["ip"], e["port"]) for e in db["ports"][0]["endpoints"]] == [
        ("10.244.1.9", 8081), ("10.244.1.10", 8080), ("10.244.3.2", 9000)]
    assert service(model, "peers")["ports"] == [] and service(model, "peers")["cluster_ip"] is None
    assert service(model, "web")["cluster_ip"] == "10.96.0.11"  # headless ones take no address
    assert allocations(model)["default/db"] == {"cluster_ip": None, "node_ports": {}}


def test_a_headless_service_without_ports_names_its_ready_pods():
    """As Kubernetes' port-less EndpointSlice, which CoreDNS answers A records from."""
    model = load(svc("{clusterIP: None, selector: {app: web}}", name="peers"))
    peers = service(model, "peers")
    assert peers["ports"] == []
    assert peers["addresses"] == ["10.244.1.9", "10.244.1.10", "10.244.3.2"]
    assert "addresses" not in service(load(svc("{selector: {app: web}, ports: [{port: 80}]}")), "web")


def test_multi_port_tcp_udp_sctp():
    model = load("""\
        apiVersion: v1
        kind: Service
        metadata: {name: multi}
        spec:
          type: NodePort
          selector: {app: web, tier: front}
          ports:
          - {name: http, port: 80, targetPort: http}
          - {name: dns, protocol: UDP, port: 53, targetPort: dns}
          - {name: dns-tcp, protocol: TCP, port: 53}
          - {name: sctp, protocol: SCTP, port: 9999, targetPort: 7777}
        """)
    ports = service(model, "multi")["ports"]
    assert [(p["name"], p["protocol"], p["port"], p["node_port"]) for p in ports] == [
        ("http", "TCP", 80, 30000), ("dns", "UDP", 53, 30000), ("dns-tcp", "TCP", 53, 30001),
        ("sctp", "SCTP", 9999, 30000)]
    assert [(e["ip"], e["port"]) for e in ports[1]["endpoints"]] == [
        ("10.244.1.9", 5353), ("10.244.1.10", 53)]
    assert [(e["ip"], e["port"]) for e in ports[3]["endpoints"]] == [
        ("10.244.1.9", 7777), ("10.244.1.10", 7777)]


def test_named_target_port_resolves_to_each_pods_own_number():
    pods = PODS + [pod("web-3", {"app": "web"}, [{"name": "metrics", "containerPort": 9100}], "10.244.3.4"),
                   pod("web-4", {"app": "web"}, [{"name": "http", "containerPort": 7000, "protocol": "UDP"}],
                       "10.244.3.5")]
    model = load(svc("{selector: {app: web}, ports: [{port: 80, targetPort: http}]}"), pods)
    # web-3 has no port named http, web-4's is UDP: both skipped; prod/web-prod is another namespace
    assert service(model, "web")["ports"][0]["endpoints"] == [
        ep("10.244.1.9", 8081, "node2", "default/web-1"),
        ep("10.244.1.10", 8080, "node1", "default/web-0"),
        ep("10.244.3.2", 9000, "node3", "default/web-2")]


def test_selector_needs_every_label_and_the_same_namespace():
    model = load(svc("{selector: {app: web, tier: front}, ports: [{port: 80}]}")
                 + "---\n" + svc("{selector: {app: web}, ports: [{port: 80}]}", namespace="prod"))
    assert [e["pod"] for e in service(model, "web")["ports"][0]["endpoints"]] == [
        "default/web-1", "default/web-0"]
    assert [e["pod"] for e in service(model, "web", "prod")["ports"][0]["endpoints"]] == ["prod/web-prod"]


def test_selector_matching_no_pod_is_a_service_without_endpoints():
    model = load(svc("{selector: {app: nothing}, ports: [{port: 80, targetPort: http}]}"))
    assert service(model, "web")["ports"][0]["endpoints"] == []


def test_empty_selector_selects_nothing_and_takes_endpoints_objects():
    # Kubernetes reads `selector: {}` as no selector: the endpoints come from Endpoints objects.
    model = load(svc("{selector: {}, ports: [{port: 80}]}") + """---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 8080}]}]
""")
    assert service(model, "web")["ports"][0]["endpoints"] == [ep("10.0.0.1", 8080)]


def test_pods_without_an_ip_yet_validate_but_give_no_endpoints():
    pods = [dict(p, ip=None) for p in PODS]
    model = load(svc("{selector: {app: web}, ports: [{port: 80, targetPort: http}]}"), pods)
    assert service(model, "web")["ports"][0]["endpoints"] == []
    with pytest.raises(ServiceSpecError, match="declares a TCP port named 'https'"):
        load(svc("{selector: {app: web}, ports: [{port: 80, targetPort: https}]}"), pods)


def test_session_affinity_timeout():
    model = load(svc("{selector: {app: web}, sessionAffinity: ClientIP, ports: [{port: 80}]}", "a")
                 + "---\n" + svc("{selector: {app: web}, sessionAffinity: ClientIP, sessionAffinityConfig: "
                                 "{clientIP: {timeoutSeconds: 60}}, ports: [{port: 80}]}", "b")
                 + "---\n" + svc("{selector: {app: web}, sessionAffinity: None, ports: [{port: 80}]}", "c"))
    assert [s["session_affinity_timeout"] for s in model["services"]] == [10800, 60, None]


def test_accepted_fields_that_change_nothing_here():
    model = load(svc("{selector: {app: web}, type: LoadBalancer, ipFamilies: [IPv4], ipFamilyPolicy: "
                     "PreferDualStack, clusterIPs: [10.96.0.50], externalTrafficPolicy: Local, "
                     "healthCheckNodePort: 30999, loadBalancerSourceRanges: [0.0.0.0/0], "
                     "publishNotReadyAddresses: true, ports: [{port: 80, appProtocol: http}]}"))
    assert service(model, "web")["cluster_ip"] == "10.96.0.50"


def test_load_balancer_without_node_port_allocation_keeps_only_asked_ones():
    model = load(svc("{selector: {app: web}, type: LoadBalancer, allocateLoadBalancerNodePorts: false, "
                     "ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 31000}]}"))
    assert [p["node_port"] for p in service(model, "web")["ports"]] == [None, 31000]


def test_namespace_defaults_to_default_and_services_sort_by_namespace_and_name():
    model = load(svc("{selector: {app: web}, ports: [{port: 80}]}", "b", "prod")
                 + "---\napiVersion: v1\nkind: Service\nmetadata: {name: z}\nspec: {ports: [{port: 80}]}\n"
                 + "---\n" + svc("{ports: [{port: 80}]}", "a", "default"))
    assert [(s["namespace"], s["name"]) for s in model["services"]] == [
        ("default", "a"), ("default", "z"), ("prod", "b")]
    # addresses go out in that order too
    assert [s["cluster_ip"] for s in model["services"]] == ["10.96.0.11", "10.96.0.12", "10.96.0.13"]


# --- Endpoints and EndpointSlice ------------------------------------------------------

SELECTORLESS = """\
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  %s
  ports:
  - {name: http, port: 80}
  - {name: dns, protocol: UDP, port: 53}
"""


def test_endpoints_match_ports_by_name_and_protocol_and_skip_not_ready():
    model = load(SELECTORLESS % "" + """---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, namespace: shop}
subsets:
- addresses: [{ip: 203.0.113.10, nodeName: node1}, {ip: 203.0.113.9}]
  notReadyAddresses: [{ip: 203.0.113.11}]
  ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}, {name: dns, port: 54},
          {name: other, port: 1}]
- addresses: [{ip: 203.0.113.10}]
  ports: [{name: http, port: 8080}]
""")
    http, dns = service(model, "ext", "shop")["ports"]
    assert http["endpoints"] == [ep("203.0.113.9", 8080), ep("203.0.113.10", 8080, "node1")]
    assert dns["endpoints"] == [ep("203.0.113.9", 53), ep("203.0.113.10", 53, "node1")]


SLICE = """---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s
  namespace: shop
  labels: {kubernetes.io/service-name: ext}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, protocol: UDP, port: 5353}]
endpoints:
%s"""


def test_endpoint_slices_are_merged_and_not_ready_endpoints_left_out():
    model = load(SELECTORLESS % "" + SLICE % ("ext-a", """\
- {addresses: [10.0.0.10], nodeName: node2}
- {addresses: [10.0.0.9, 10.0.0.99], conditions: {ready: true}}
- {addresses: [10.0.0.8], conditions: {ready: false, serving: true}}
""") + SLICE % ("ext-b", """\
- {addresses: [10.0.0.1], conditions: {}}
- {addresses: [10.0.0.10], nodeName: node2}
"""))
    http, dns = service(model, "ext", "shop")["ports"]
    # sorted as addresses (10.0.0.9 before 10.0.0.10), de-duplicated, the first address of each endpoint
    assert http["endpoints"] == [ep("10.0.0.1", 8080), ep("10.0.0.9", 8080), ep("10.0.0.10", 8080, "node2")]
    assert [e["port"] for e in dns["endpoints"]] == [5353, 5353, 5353]


def test_publish_not_ready_addresses_includes_not_ready_endpoints():
    model = load(SELECTORLESS % "publishNotReadyAddresses: true" + SLICE % ("ext-a", """\
- {addresses: [10.0.0.8], conditions: {ready: false}}
""") + """---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, namespace: shop}
subsets: [{notReadyAddresses: [{ip: 10.0.0.7}], ports: [{name: http, port: 8080}]}]
""")
    http, dns = service(model, "ext", "shop")["ports"]
    assert http["endpoints"] == [ep("10.0.0.7", 8080), ep("10.0.0.8", 8080)]
    assert dns["endpoints"] == [ep("10.0.0.8", 5353)]


def test_external_name_service_has_no_endpoints_even_with_a_selector_and_ports():
    model = load(svc("{type: ExternalName, externalName: db.example.com., selector: {app: web}, "
                     "ports: [{port: 5432}]}"))
    assert service(model, "web")["external_name"] == "db.example.com"  # the trailing dot dropped
    assert service(model, "web")["ports"] == [{"name": "", "protocol": "TCP", "port": 5432, "node_port": None,
                                               "target_port": 5432, "endpoints": []}]


# --- allocation -----------------------------------------------------------------------

STABLE = (svc("{type: NodePort, selector: {app: web}, ports: [{name: a, port: 80}, {name: b, port: 53, "
              "protocol: UDP}]}", "middle")
          + "---\n" + svc("{type: NodePort, selector: {app: web}, ports: [{port: 443}]}", "zebra"))


def test_allocation_is_stable_when_a_service_that_sorts_first_is_added():
    first = load(STABLE)
    assert allocations(first) == {
        "default/middle": {"cluster_ip": "10.96.0.11", "node_ports": {"TCP/80": 30000, "UDP/53": 30000}},
        "default/zebra": {"cluster_ip": "10.96.0.12", "node_ports": {"TCP/443": 30001}}}
    previous = json.loads(json.dumps(allocations(first)))  # as stored between runs
    second = load(svc("{type: NodePort, selector: {app: web}, ports: [{port: 80}]}", "aardvark") + "---\n"
                  + STABLE, previous=previous)
    assert {k: v for k, v in allocations(second).items() if k != "default/aardvark"} == allocations(first)
    assert allocations(second)["default/aardvark"] == {"cluster_ip": "10.96.0.13",
                                                       "node_ports": {"TCP/80": 30002}}
    assert load(STABLE, previous=allocations(second)) == first


def test_previous_allocations_are_kept_or_checked():
    previous = {"default/a": {"cluster_ip": "10.96.0.51", "node_ports": {"TCP/80": 31001}},
                "default/b": {"cluster_ip": "10.200.0.1", "node_ports": {"TCP/80": 40000}},
                "default/c": {"cluster_ip": "10.96.0.10", "node_ports": {"TCP/80": True}},
                "default/d": "garbage"}
    model = load(svc("{type: NodePort, clusterIP: 10.96.0.50, ports: [{port: 80, nodePort: 31000}]}", "z")
                 + "".join("---\n" + svc("{type: NodePort, ports: [{port: 80}]}", name) for name in "abcd"),
                 previous=previous)
    assert [(s["name"], s["cluster_ip"], s["ports"][0]["node_port"]) for s in model["services"]] == [
        ("a", "10.96.0.51", 31001), ("b", "10.96.0.11", 30000), ("c", "10.96.0.12", 30001),
        ("d", "10.96.0.13", 30002), ("z", "10.96.0.50", 31000)]


@pytest.mark.parametrize(("claim", "field"), [
    ("{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80}]}",
     "spec.clusterIP: 10.96.0.51 is the clusterIP"),
    ("{type: NodePort, ports: [{port: 80, nodePort: 31001}]}",
     "spec.ports[0].nodePort: 31001/TCP is the nodePort"),
])
def test_a_claim_on_what_another_service_holds_is_refused_not_moved(claim, field):
    """As the API server: the second Service to ask for an allocated address fails; the first keeps it."""
    previous = {"default/a": {"cluster_ip": "10.96.0.51", "node_ports": {"TCP/80": 31001}}}
    with pytest.raises(ServiceSpecError) as err:
        load(svc(claim, "z") + "---\n" + svc("{type: NodePort, ports: [{port: 80}]}", "a"), previous=previous)
    assert str(err.value).startswith("services.yml: document 1 (line 1), Service default/z: %s allocated "
                                     "earlier to Service default/a (document 2 (line 6))" % field)


def test_previous_addresses_are_kept_when_free():
    model = load(svc("{ports: [{port: 80}]}", "a"), previous={"default/a": {"cluster_ip": "10.96.7.7"}})
    assert model["services"][0]["cluster_ip"] == "10.96.7.7"


def test_cluster_ip_allocation_skips_reserved_addresses_and_wraps_round():
    text = "".join("---\n" + svc("{ports: [{port: 80}]}", "s%02d" % i) for i in range(12))
    model = load(text, service_cidr="10.96.0.0/28")
    assert [s["cluster_ip"].rsplit(".", 1)[1] for s in model["services"]] == [
        "11", "12", "13", "14", "2", "3", "4", "5", "6", "7", "8", "9"]
    with pytest.raises(ServiceSpecError) as err:
        load(text + "---\n" + svc("{ports: [{port: 80}]}", "s99"), service_cidr="10.96.0.0/28")
    assert str(err.value) == ("services.yml: document 13 (line 62), Service default/s99: spec.clusterIP: "
                              "no free address left in service_cidr 10.96.0.0/28")


def test_reserved_addresses_may_be_asked_for():
    model = load(svc("{clusterIP: 10.96.0.10, ports: [{port: 53}]}", "dns")
                 + "---\n" + svc("{clusterIP: 10.96.0.1, ports: [{port: 443}]}", "kubernetes"))
    assert [s["cluster_ip"] for s in model["services"]] == ["10.96.0.10", "10.96.0.1"]


def test_node_ports_are_per_protocol_and_run_out():
    model = load(svc("{type: NodePort, ports: [{name: t, port: 53, nodePort: 30053}, "
                     "{name: u, port: 53, protocol: UDP, nodePort: 30053}]}"), node_port_range=[30053, 30054])
    assert [p["node_port"] for p in model["services"][0]["ports"]] == [30053, 30053]
    assert model["node_port_range"] == [30053, 30054]
    with pytest.raises(ServiceSpecError) as err:
        load(svc("{type: NodePort, ports: [{name: a, port: 1}, {name: b, port: 2}, {name: c, port: 3}]}"),
             node_port_range="30000-30001")
    assert str(err.value) == ("services.yml: document 1 (line 1), Service default/web: "
                              "spec.ports[2].nodePort: no free TCP NodePort left in 30000-30001")


def test_parameters_are_checked():
    for kwargs, message in [({"service_cidr": "10.96.0.0/33"}, "service_cidr: '10.96.0.0/33'"),
                            ({"service_cidr": "fd00::/108"}, "is not an IPv4 network"),
                            ({"cluster_cidr": None}, "cluster_cidr: None"),
                            ({"node_port_range": "32767-30000"}, "node_port_range: '32767-30000'"),
                            ({"node_port_range": "30000"}, "is not a port range"),
                            ({"node_port_range": [0, 10]}, "is not a port range")]:
        with pytest.raises(ServiceSpecError, match=message.replace("(", r"\(")):
            load("", **kwargs)


# --- the file ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n", "---\n# a comment\n---\n", None])
def test_empty_file_has_no_services(text):
    model = load_services(text, FILE, PODS)
    assert model["services"] == [] and allocations(model) == {}


def test_network_policies_and_namespaces_are_skipped_for_a_later_stage():
    model = load(textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: Not_Checked_Here}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny}
        spec: {podSelector: {}, anything: [1, 2]}
        ---
        """) + svc("{ports: [{port: 80}]}"))
    assert [s["name"] for s in model["services"]] == ["web"]


def test_a_list_of_objects():
    model = load("""\
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}
        - {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 80, nodePort: 30001}]}}
        """.replace("metadata: {name: b}, spec: {", "metadata: {name: b}, spec: {type: NodePort, "))
    assert [s["name"] for s in model["services"]] == ["a", "b"]
    with pytest.raises(ServiceSpecError) as err:
        load("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n")
    assert str(err.value).startswith(
        "services.yml: document 1 (line 1), items[0], Service default/a: spec.ports:")


def test_yaml_that_does_not_parse_names_line_and_column():
    with pytest.raises(ServiceSpecError) as err:
        load(svc("{ports: [{port: 80}]}") + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\n"
             "  namespace: y: z\n")
    # libyaml adds "in this context" to PyYAML's wording.
    assert str(err.value).startswith("services.yml: line 10, column 15: YAML does not parse: "
                                     "mapping values are not allowed")


def test_a_key_given_twice_is_refused():
    with pytest.raises(ServiceSpecError) as err:
        load("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec: {ports: [{port: 80}]}\n"
             "metadata: {}\n")
    assert str(err.value) == ("services.yml: line 6, column 1: YAML does not parse: "
                              "duplicate key 'metadata' (also on line 3)")


def test_document_numbers_and_lines_count_null_documents_and_comments():
    with pytest.raises(ServiceSpecError) as err:
        load("# services\n---\n---\n# the web one\n" + svc("{ports: [{port: 0}]}"))
    assert str(err.value) == ("services.yml: document 2 (line 5), Service default/web: spec.ports[0].port: "
                              "must be an integer 1-65535, got 0")


# --- errors: every one names file, document, line, object and field -------------------------

ENDPOINTS = "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: %s}\nsubsets: %s\n"
SLICE_DOC = ("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s1, labels: %s}\n"
             "addressType: %s\nendpoints: %s\n")
PLAIN = svc("{ports: [{port: 80}]}", "plain")  # document 1, lines 1-4: the next document starts on line 6
SVC2 = "services.yml: document 2 (line 6), Service default/web: "


def doc2(spec, name="web"):
    """A Service (default/web) as document 2, starting on line 6."""
    return PLAIN + "---\n" + svc(spec, name)


@pytest.mark.parametrize("text, expected", [
    ("- 1\n- 2\n", "services.yml: document 1 (line 1): a document must be a mapping (a Kubernetes object), "
                   "got a list"),
    (PLAIN + "---\nhello\n", "services.yml: document 2 (line 6): a document must be a mapping"),
    ("kind: Service\nmetadata: {name: a}\n", "services.yml: document 1 (line 1): apiVersion: is required"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "services.yml: document 1 (line 1): kind: is required"),
    (PLAIN + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
     "services.yml: document 2 (line 6): kind: kind Deployment is not supported here; "
     "the file holds Service, Endpoints and EndpointSlice objects"),
    ("apiVersion: apps/v1\nkind: Service\n", "document 1 (line 1), Service: apiVersion: apps/v1 is not the "
                                             "apiVersion of kind Service: use v1"),
    ("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List}\n",
     "document 1 (line 1), items[0], List: kind: a List inside a List is not supported"),
    ("apiVersion: v1\nkind: List\nitems: {}\n", "document 1 (line 1), List: items: must be a list"),
    # names
    (svc("{ports: [{port: 80}]}", "Web"),
     "document 1 (line 1), Service: metadata.name: 'Web' is not a DNS-1035 label (lower-case alphanumerics"),
    (svc("{ports: [{port: 80}]}", "1web"), "metadata.name: '1web' is not a DNS-1035 label"),
    (svc("{ports: [{port: 80}]}", "w" * 64), "is not a DNS-1035 label"),
    ("apiVersion: v1\nkind: Service\nspec: {ports: [{port: 80}]}\n", "Service: metadata.name: is required"),
    (svc("{ports: [{port: 80}]}", "web", "Prod"),
     "Service: metadata.namespace: 'Prod' is not a DNS-1123 label"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: [x]}\nspec: {ports: [{port: 80}]}\n",
     "Service default/a: metadata.labels: must be a mapping, got ['x']"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {v: 1}}\nspec: {ports: [{port: 80}]}\n",
     "Service default/a: metadata.labels: must be a map of strings to strings"),
    (doc2("{ports: [{port: 81}]}", "plain"),
     "document 2 (line 6), Service default/plain: metadata.name: duplicate Service default/plain; "
     "the first is document 1 (line 1)"),
    # spec
    (doc2("[]"), SVC2 + "spec: must be a mapping, got []"),
    (doc2("{selectr: {app: web}, ports: [{port: 80}]}"),
     SVC2 + "spec.selectr: unknown field (did you mean selector?)"),
    (doc2("{colour: red, ports: [{port: 80}]}"), SVC2 + "spec.colour: unknown field"),
    (doc2("{type: Ingress, ports: [{port: 80}]}"),
     SVC2 + "spec.type: must be one of ClusterIP|NodePort|LoadBalancer|ExternalName, got 'Ingress'"),
    (doc2("{type: ExternalName}"), SVC2 + "spec.externalName: is required"),
    (doc2("{type: ExternalName, externalName: 'db_1.example'}"),
     SVC2 + "spec.externalName: 'db_1.example' is not a DNS-1123 subdomain"),
    (doc2("{type: ExternalName, externalName: db.example.com, clusterIP: 10.96.0.5}"),
     SVC2 + "spec.clusterIP: must not be set on an ExternalName Service"),
    (doc2("{selector: {app: 1}, ports: [{port: 80}]}"),
     SVC2 + "spec.selector: must be a map of strings to strings"),
    (doc2("{}"), SVC2 + "spec.ports: a ClusterIP Service needs at least one port"),
    (doc2("{ports: {port: 80}}"), SVC2 + "spec.ports: must be a list"),
    (doc2("{publishNotReadyAddresses: 'yes', ports: [{port: 80}]}"),
     SVC2 + "spec.publishNotReadyAddresses: must be true or false, got 'yes'"),
    # clusterIP
    (doc2("{clusterIP: 10.0.0.5, ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIP: 10.0.0.5 is not inside service_cidr 10.96.0.0/12"),
    (doc2("{clusterIP: 10.96.0.300, ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIP: '10.96.0.300' is not an IPv4 address"),
    (doc2("{clusterIP: 'fd00::5', ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIP: 'fd00::5' is not an IPv4 address"),
    (doc2("{clusterIP: 10.96.0.0, ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIP: 10.96.0.0 is the network or broadcast address of service_cidr 10.96.0.0/12"),
    (svc("{clusterIP: 10.96.0.50, ports: [{port: 80}]}", "first") + "---\n"
     + svc("{clusterIPs: [10.96.0.50], ports: [{port: 80}]}", "second"),
     "document 2 (line 6), Service default/second: spec.clusterIPs[0]: 10.96.0.50 is already the "
     "clusterIP of Service default/first (document 1 (line 1))"),
    (doc2("{clusterIP: 10.96.0.5, clusterIPs: [10.96.0.6], ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIPs[0]: '10.96.0.6' must equal spec.clusterIP '10.96.0.5'"),
    (doc2("{clusterIPs: [10.96.0.5, 'fd00::5'], ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIPs: podnet is IPv4 single-stack"),
    (doc2("{ipFamilies: [IPv6], ports: [{port: 80}]}"),
     SVC2 + "spec.ipFamilies: podnet is IPv4 single-stack: only [IPv4], got ['IPv6']"),
    (doc2("{ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}"),
     SVC2 + "spec.ipFamilyPolicy: podnet is IPv4 single-stack"),
    (doc2("{type: NodePort, clusterIP: None, ports: [{port: 80}]}"),
     SVC2 + "spec.clusterIP: a NodePort Service cannot be headless"),
    (doc2("{externalIPs: [198.51.100.300], ports: [{port: 80}]}"),
     SVC2 + "spec.externalIPs[0]: '198.51.100.300' is not an IPv4 address"),
    # ports
    (doc2("{ports: [{port: 0}]}"), SVC2 + "spec.ports[0].port: must be an integer 1-65535, got 0"),
    (doc2("{ports: [{port: 70000}]}"), SVC2 + "spec.ports[0].port: must be an integer 1-65535, "
                                                              "got 70000"),
    (doc2("{ports: [{port: eighty}]}"), SVC2 + "spec.ports[0].port: must be an integer 1-65535, "
                                                               "got 'eighty'"),
    (doc2("{ports: [{port: true}]}"), SVC2 + "spec.ports[0].port: must be an integer"),
    (doc2("{ports: [{targetPort: 80}]}"), SVC2 + "spec.ports[0].port: must be an integer 1-65535, "
                                                                 "got None"),
    (doc2("{ports: [80]}"), SVC2 + "spec.ports[0]: must be a mapping"),
    (doc2("{ports: [{name: a, port: 80}, {name: a, port: 81}]}"),
     SVC2 + "spec.ports[1].name: duplicate port name 'a' (also spec.ports[0])"),
    (doc2("{ports: [{name: a, port: 80}, {port: 81}]}"),
     SVC2 + "spec.ports[1].name: is required when a Service has more than one port"),
    (doc2("{ports: [{port: 80}, {name: b, port: 81}]}"), SVC2 + "spec.ports[0].name: is required"),
    (doc2("{ports: [{name: HTTP, port: 80}]}"), SVC2 + "spec.ports[0].name: 'HTTP' is not a "
                                                                       "DNS-1123 label"),
    (doc2("{ports: [{name: a, port: 80}, {name: b, port: 80}]}"),
     SVC2 + "spec.ports[1]: duplicate port 80/TCP (also spec.ports[0])"),
    (doc2("{ports: [{port: 80, protocol: HTTP}]}"),
     SVC2 + "spec.ports[0].protocol: must be one of TCP|UDP|SCTP, got 'HTTP'"),
    (doc2("{ports: [{port: 80, protocol: tcp}]}"), SVC2 + "spec.ports[0].protocol: must be one of"),
    (doc2("{ports: [{port: 80, targetport: 8080}]}"),
     SVC2 + "spec.ports[0].targetport: unknown field (did you mean targetPort?)"),
    (doc2("{ports: [{port: 80, targetPort: 0}]}"), SVC2 + "spec.ports[0].targetPort: must be an "
                                                                          "integer 1-65535, got 0"),
    (doc2("{ports: [{port: 80, targetPort: http_web}]}"),
     SVC2 + "spec.ports[0].targetPort: 'http_web' is not an IANA service name"),
    (doc2("{ports: [{port: 80, targetPort: http-web-service}]}"),
     SVC2 + "spec.ports[0].targetPort: 'http-web-service' is not an IANA service name"),
    (doc2("{selector: {app: web}, ports: [{port: 80, targetPort: https}]}"),
     SVC2 + "spec.ports[0].targetPort: no pod the selector matches (default/web-0, default/web-1, "
            "default/web-2) declares a TCP port named 'https'"),
    (doc2("{selector: {app: web}, ports: [{port: 53, protocol: SCTP, targetPort: dns}]}"),
     SVC2 + "spec.ports[0].targetPort: no pod the selector matches"),
    # nodePorts
    (doc2("{ports: [{port: 80, nodePort: 30080}]}"),
     SVC2 + "spec.ports[0].nodePort: only a NodePort or LoadBalancer Service has nodePorts; "
            "this one is ClusterIP"),
    (doc2("{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 40000}]}"),
     SVC2 + "spec.ports[1].nodePort: 40000 is outside the NodePort range 30000-32767"),
    (doc2("{type: NodePort, ports: [{port: 80, nodePort: 70000}]}"),
     SVC2 + "spec.ports[0].nodePort: must be an integer 1-65535, got 70000"),
    (svc("{type: NodePort, ports: [{port: 80, nodePort: 30080}]}", "first") + "---\n"
     + svc("{type: LoadBalancer, ports: [{port: 81, nodePort: 30080}]}", "second"),
     "document 2 (line 6), Service default/second: spec.ports[0].nodePort: 30080/TCP is already the "
     "nodePort of Service default/first, spec.ports[0] (document 1 (line 1))"),
    (doc2("{type: NodePort, ports: [{name: a, port: 80, nodePort: 30080}, "
                           "{name: b, port: 81, nodePort: 30080}]}"),
     SVC2 + "spec.ports[1].nodePort: 30080/TCP is already the nodePort of Service default/web, "
            "spec.ports[0]"),
    # policies and affinity
    (doc2("{type: NodePort, externalTrafficPolicy: Global, ports: [{port: 80}]}"),
     SVC2 + "spec.externalTrafficPolicy: must be one of Cluster|Local, got 'Global'"),
    (doc2("{externalTrafficPolicy: Local, ports: [{port: 80}]}"),
     SVC2 + "spec.externalTrafficPolicy: may only be set on a NodePort or LoadBalancer Service, or one with "
            "externalIPs; this one is ClusterIP"),
    (doc2("{internalTrafficPolicy: Node, ports: [{port: 80}]}"),
     SVC2 + "spec.internalTrafficPolicy: must be one of Cluster|Local, got 'Node'"),
    (doc2("{sessionAffinity: Cookie, ports: [{port: 80}]}"),
     SVC2 + "spec.sessionAffinity: must be one of None|ClientIP, got 'Cookie'"),
    (doc2("{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, "
                           "ports: [{port: 80}]}"),
     SVC2 + "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be an integer 1-86400, got 0"),
    (doc2("{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: "
                           "86401}}, ports: [{port: 80}]}"),
     "timeoutSeconds: must be an integer 1-86400, got 86401"),
    (doc2("{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: "
                           "soon}}, ports: [{port: 80}]}"),
     "timeoutSeconds: must be an integer 1-86400, got 'soon'"),
    (doc2("{sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}, ports: [{port: 80}]}"),
     SVC2 + "spec.sessionAffinityConfig: is only allowed with sessionAffinity: ClientIP"),
    # Endpoints
    (svc("{selector: {app: web}, ports: [{port: 80}]}") + ENDPOINTS % ("web", "[]"),
     "services.yml: document 2 (line 6), Endpoints default/web: metadata.name: Service default/web has a "
     "selector; podnet computes its endpoints"),
    (PLAIN + ENDPOINTS % ("x", "[]"),
     "services.yml: document 2 (line 6), Endpoints default/x: metadata.name: no Service default/x for these "
     "Endpoints"),
    (svc("{type: ExternalName, externalName: example.com}") + ENDPOINTS % ("web", "[]"),
     "Endpoints default/web: metadata.name: Service default/web is type ExternalName"),
    (PLAIN + ENDPOINTS % ("plain", "[{addresses: [{ip: 10.0.0.256}], ports: [{port: 80}]}]"),
     "document 2 (line 6), Endpoints default/plain: subsets[0].addresses[0].ip: '10.0.0.256' is not an IPv4 "
     "address"),
    (PLAIN + ENDPOINTS % ("plain", "[{notReadyAddresses: [{ip: 'fd00::1'}]}]"),
     "Endpoints default/plain: subsets[0].notReadyAddresses[0].ip: 'fd00::1' is not an IPv4 address"),
    (PLAIN + ENDPOINTS % ("plain", "[{addresses: [{ip: 10.0.0.1}], ports: [{port: 0}]}]"),
     "Endpoints default/plain: subsets[0].ports[0].port: must be an integer 1-65535, got 0"),
    (PLAIN + ENDPOINTS % ("plain", "[{addresses: [{ip: 10.0.0.1, nodeName: [a]}], ports: [{port: 80}]}]"),
     "Endpoints default/plain: subsets[0].addresses[0].nodeName: must be a string"),
    (PLAIN + ENDPOINTS % ("plain", "[]") + ENDPOINTS % ("plain", "[]"),
     "document 3 (line 11), Endpoints default/plain: metadata.name: duplicate Endpoints default/plain; "
     "the first is document 2 (line 6)"),
    # EndpointSlice
    (PLAIN + SLICE_DOC % ("{}", "IPv4", "[]"),
     "services.yml: document 2 (line 6), EndpointSlice default/s1: "
     'metadata.labels["kubernetes.io/service-name"]: is required'),
    (PLAIN + SLICE_DOC % ("{kubernetes.io/service-name: nope}", "IPv4", "[]"),
     'EndpointSlice default/s1: metadata.labels["kubernetes.io/service-name"]: '
     "no Service default/nope for this EndpointSlice"),
    (svc("{selector: {app: web}, ports: [{port: 80}]}") + SLICE_DOC % ("{kubernetes.io/service-name: web}",
                                                                       "IPv4", "[]"),
     'EndpointSlice default/s1: metadata.labels["kubernetes.io/service-name"]: Service default/web has a '
     "selector; podnet computes its endpoints"),
    (PLAIN + SLICE_DOC % ("{kubernetes.io/service-name: plain}", "IPv6", "[]"),
     "EndpointSlice default/s1: addressType: must be IPv4 (podnet's Services are IPv4 only), got 'IPv6'"),
    (PLAIN + SLICE_DOC % ("{kubernetes.io/service-name: plain}", "FQDN", "[]"), "addressType: must be IPv4"),
    (PLAIN + SLICE_DOC % ("{kubernetes.io/service-name: plain}", "IPv4", "[{addresses: [10.0.0.1, 10.0.1]}]"),
     "document 2 (line 6), EndpointSlice default/s1: endpoints[0].addresses[1]: "
     "'10.0.1' is not an IPv4 address"),
    (PLAIN + SLICE_DOC % ("{kubernetes.io/service-name: plain}", "IPv4", "[{addresses: []}]"),
     "EndpointSlice default/s1: endpoints[0].addresses: needs at least one address"),
    (PLAIN + SLICE_DOC % ("{kubernetes.io/service-name: plain}", "IPv4",
                          "[{addresses: [10.0.0.1], conditions: {ready: maybe}}]"),
     "EndpointSlice default/s1: endpoints[0].conditions.ready: must be true or false, got 'maybe'"),
])
def test_errors_name_file_document_line_object_and_field(text, expected):
    with pytest.raises(ServiceSpecError) as err:
        load_services(text, FILE, PODS)
    assert expected in str(err.value)
    assert str(err.value).startswith("services.yml: ")
    assert isinstance(err.value, ValueError)
