"""Bad input, as users write it: every row is refused in the plan, before any node changes, with
a message that names the file (or inventory field), the object and the field.

The rows are what people paste from `kubectl get -o yaml`, k3s manifests and blog posts, typos,
addresses the Kubernetes API server refuses, claims two Services make on one address or port,
inventories whose networks collide, and files no YAML reader should choke on. Each row calls
the very function the plan play calls (the pure core behind podnet_plan's filters), so the
suite is hermetic; molecule/default/tests/test_bad_input_lab.py runs a few of them through the real plan
and shows no node changed.
"""

import textwrap

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.podnet.network.plugins.filter import podnet as filters
from ansible_collections.podnet.network.plugins.module_utils.common.manifests import ManifestError
from ansible_collections.podnet.network.plugins.module_utils.pod_network.cidr import (
    PodCIDRError,
    allocate_pod_cidrs,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.spec import PodSpecError, expand_pods
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.services.model import (
    check_allocations,
    load_services,
)
from ansible_collections.podnet.network.plugins.modules.node_info import RecordError, read_persisted

PODS = [{"namespace": "default", "name": "web-0", "labels": {"app": "web"}, "ip": None, "node": "node1",
         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]
NODES = ["node1", "node2"]
SVC_HEAD = "apiVersion: v1\nkind: Service\n"


def svc(spec, name="web", meta=""):
    """A Service of four lines; `spec` and `meta` in flow style."""
    return SVC_HEAD + "metadata: {name: %s%s}\nspec: %s\n" % (name, meta, spec)


WEB = svc("{selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}")
EXT = "{ports: [{port: 80}]}"   # a Service without selector, for Endpoints and EndpointSlices
SVC_EXT = svc(EXT, "ext")


def endpoints(subsets, name="ext"):
    return "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: %s}\nsubsets: %s\n" % (name, subsets)


def eps(body, name="ext-1", labels="{kubernetes.io/service-name: ext}"):
    return ("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: %s, labels: %s}\n"
            "addressType: IPv4\n%s\n" % (name, labels, body))


def netpol(spec, meta=""):
    return ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p%s}\nspec: %s\n"
            % (meta, spec))


DOC1 = "services.yml: document 1 (line 1)"
DOC2 = "services.yml: document 2 (line 6)"
WEB1 = DOC1 + ", Service default/web: "
EXT_EP = DOC2 + ", Endpoints default/ext: "
EXT_SL = DOC2 + ", EndpointSlice default/ext-1: "
POL1 = "policies.yml: document 1 (line 1), NetworkPolicy default/p: "


# --- how each row reaches the plan's code ---------------------------------------------------

def services(text, **kwargs):
    load_services(textwrap.dedent(text), "services.yml", PODS, **kwargs)


def policies(text):
    """As the plan reads a policies file: it may hold nothing but policies."""
    load_policies([(textwrap.dedent(text), "policies.yml", "the policies file (podnet_policies_file)")], PODS)


def pods(declared):
    expand_pods(declared, NODES)


def cidrs(cluster="10.244.0.0/16", mask=24, nodes=None):
    allocate_pod_cidrs(cluster, mask, nodes or [{"name": "node1", "pod_cidr": None, "persisted": None,
                                                 "node_network": "192.168.56.11/24"}])


def pod_cidr(value, lan="192.168.56.11/24", cluster="10.244.0.0/16", mask=24):
    cidrs(cluster, mask, [{"name": "node1", "pod_cidr": value, "persisted": None, "node_network": lan}])


def persisted(value):
    cidrs(nodes=[{"name": "node1", "pod_cidr": None, "persisted": value, "node_network": "192.168.56.11/24"}])


def services_file(data, tmp_path):
    path = tmp_path / "services.yml"
    path.write_bytes(data)
    filters.podnet_services_model(str(path), PODS)


def policies_file(data, tmp_path):
    path = tmp_path / "policies.yml"
    path.write_bytes(data)
    filters.podnet_policy_model([str(path)], PODS)


def allocations_from(value):
    check_allocations(value, "/etc/podnet/services/allocations.json")


def node_record(data, tmp_path):
    path = tmp_path / "node.json"
    path.write_bytes(data)
    read_persisted(str(path))


def kubectl_yaml(extra_meta="", extra_spec="", extra_top=""):
    """A Service as `kubectl get svc web -o yaml` prints it."""
    return textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata:
          annotations:
            kubectl.kubernetes.io/last-applied-configuration: |
              {"apiVersion":"v1","kind":"Service"}
          creationTimestamp: "2026-11-30T10:00:00Z"
          labels: {app: web}
          name: web
          namespace: default
          resourceVersion: "4711"
          uid: 5b1c2f5e-0000-4000-8000-000000000001
        %s
        spec:
          clusterIP: 10.96.0.20
          clusterIPs: [10.96.0.20]
          internalTrafficPolicy: Cluster
          ipFamilies: [IPv4]
          ipFamilyPolicy: SingleStack
          ports:
          - {name: http, port: 80, protocol: TCP, targetPort: http}
          selector: {app: web}
          sessionAffinity: None
          type: ClusterIP
        %s
        status:
          loadBalancer: {}
        %s
        """) % (extra_meta, extra_spec, extra_top)


BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n")


def bomb(where, head=SVC_HEAD + "metadata: {name: web}\n"):
    """A 700-byte document whose aliases expand to 43 million strings at `where`: the anchors sit
    in `status`, which podnet ignores as kubectl apply does."""
    return (head + "status:\n" + textwrap.indent(BOMB, "  ") + where).encode()


# --- the table -------------------------------------------------------------------------------
# (id, call, argument(s), [what the message must say]). Every message must also name the file
# (or the inventory field) and, where there is one, the object and the field.

CASES = [
    # -- addresses the API server refuses (ValidateEndpointIP, ValidateNonSpecialIP) --
    ("externalip-unspecified", services, svc("{ports: [{port: 80}], externalIPs: [0.0.0.0]}"),
     [WEB1, "spec.externalIPs[0]", "unspecified"]),
    ("externalip-loopback", services, svc("{ports: [{port: 80}], externalIPs: [127.0.0.1]}"),
     [WEB1, "spec.externalIPs[0]", "loopback"]),
    ("externalip-loopback-other", services, svc("{ports: [{port: 80}], externalIPs: [127.1.2.3]}"),
     [WEB1, "spec.externalIPs[0]", "loopback"]),
    ("externalip-link-local", services, svc("{ports: [{port: 80}], externalIPs: [169.254.10.1]}"),
     [WEB1, "spec.externalIPs[0]", "link-local"]),
    ("externalip-link-local-multicast", services, svc("{ports: [{port: 80}], externalIPs: [224.0.0.251]}"),
     [WEB1, "spec.externalIPs[0]", "multicast"]),
    ("externalip-multicast", services, svc("{ports: [{port: 80}], externalIPs: [239.1.2.3]}"),
     [WEB1, "spec.externalIPs[0]", "multicast"]),
    ("externalip-broadcast", services, svc("{ports: [{port: 80}], externalIPs: [255.255.255.255]}"),
     [WEB1, "spec.externalIPs[0]", "broadcast"]),
    ("externalip-cidr", services, svc("{ports: [{port: 80}], externalIPs: [203.0.113.7/32]}"),
     [WEB1, "spec.externalIPs[0]", "not an IPv4 address"]),
    ("externalip-ipv6", services, svc("{ports: [{port: 80}], externalIPs: ['2001:db8::7']}"),
     [WEB1, "spec.externalIPs[0]", "IPv4"]),
    ("externalip-leading-zero", services, svc("{ports: [{port: 80}], externalIPs: [203.0.113.07]}"),
     [WEB1, "spec.externalIPs[0]", "not an IPv4 address"]),
    ("externalip-number", services, svc("{ports: [{port: 80}], externalIPs: [3405803783]}"),
     [WEB1, "spec.externalIPs[0]", "not an IPv4 address"]),
    ("externalip-with-port", services, svc("{ports: [{port: 80}], externalIPs: ['203.0.113.7:80']}"),
     [WEB1, "spec.externalIPs[0]", "not an IPv4 address"]),
    ("endpoints-loopback", services,
     SVC_EXT + endpoints("[{addresses: [{ip: 127.0.0.1}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].ip", "loopback"]),
    ("endpoints-unspecified", services,
     SVC_EXT + endpoints("[{addresses: [{ip: 0.0.0.0}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].ip", "unspecified"]),
    ("endpoints-metadata-server", services,
     SVC_EXT + endpoints("[{addresses: [{ip: 169.254.169.254}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].ip", "link-local"]),
    ("endpoints-not-ready-multicast", services,
     SVC_EXT + endpoints("[{notReadyAddresses: [{ip: 224.0.0.1}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].notReadyAddresses[0].ip", "multicast"]),
    ("endpoints-hostname-as-ip", services,
     SVC_EXT + endpoints("[{addresses: [{ip: db.example.com}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].ip", "not an IPv4 address"]),
    ("endpoints-clusterip", services,
     svc("{clusterIP: 10.96.0.50, ports: [{port: 80}]}", "ext")
     + endpoints("[{addresses: [{ip: 10.96.0.50}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].ip", "service_cidr"]),
    ("slice-loopback", services, SVC_EXT + eps("endpoints: [{addresses: [127.0.0.1]}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].addresses[0]", "loopback"]),
    ("slice-link-local", services,
     SVC_EXT + eps("endpoints: [{addresses: [169.254.0.9]}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].addresses[0]", "link-local"]),
    ("slice-unspecified", services, SVC_EXT + eps("endpoints: [{addresses: [0.0.0.0]}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].addresses[0]", "unspecified"]),
    ("slice-second-address-multicast", services,
     SVC_EXT + eps("endpoints: [{addresses: [192.0.2.4, 239.0.0.1]}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].addresses[1]", "multicast"]),
    ("clusterip-outside-range", services, svc("{clusterIP: 127.0.0.1, ports: [{port: 80}]}"),
     [WEB1, "spec.clusterIP", "service_cidr"]),
    ("clusterip-network-address", services, svc("{clusterIP: 10.96.0.0, ports: [{port: 80}]}"),
     [WEB1, "spec.clusterIP", "network or broadcast"]),
    ("clusterips-dual-stack", services,
     svc("{clusterIPs: [10.96.0.20, 'fd00::20'], ports: [{port: 80}]}"),
     [WEB1, "spec.clusterIPs", "single-stack"]),
    ("ipblock-no-prefix", policies,
     netpol("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]}"),
     [POL1, "spec.ingress[0].from[0].ipBlock.cidr", "not a CIDR"]),
    ("ipblock-bad-prefix", policies,
     netpol("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}"),
     [POL1, "spec.ingress[0].from[0].ipBlock.cidr", "not a CIDR"]),
    ("ipblock-leading-zero", policies,
     netpol("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 010.0.0.0/8}}]}]}"),
     [POL1, "spec.egress[0].to[0].ipBlock.cidr", "not a CIDR"]),
    ("ipblock-except-outside", policies,
     netpol("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, "
            "except: [192.168.0.0/16]}}]}]}"),
     [POL1, "spec.ingress[0].from[0].ipBlock.except[0]", "strict subset"]),

    # -- unknown fields, on every kind and at every level, with "did you mean" --
    ("service-top-sepc", services, SVC_HEAD + "metadata: {name: web}\nsepc: {ports: [{port: 80}]}\n",
     [WEB1, "sepc", "did you mean spec?"]),
    ("service-meta-namspace", services, svc("{ports: [{port: 80}]}", meta=", namspace: prod"),
     [DOC1, "metadata.namspace", "did you mean namespace?"]),
    ("service-meta-lables", services, svc("{ports: [{port: 80}]}", meta=", lables: {a: b}"),
     [WEB1, "metadata.lables", "did you mean labels?"]),
    ("service-spec-selecter", services, svc("{selecter: {app: web}, ports: [{port: 80}]}"),
     [WEB1, "spec.selecter", "did you mean selector?"]),
    ("service-port-targetport", services, svc("{ports: [{port: 80, targetport: 8080}]}"),
     [WEB1, "spec.ports[0].targetport", "did you mean targetPort?"]),
    ("service-port-nodeport", services, svc("{type: NodePort, ports: [{port: 80, nodeport: 30080}]}"),
     [WEB1, "spec.ports[0].nodeport", "did you mean nodePort?"]),
    ("service-affinity-clientip", services,
     svc("{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIp: {timeoutSeconds: 60}}, "
         "ports: [{port: 80}]}"),
     [WEB1, "spec.sessionAffinityConfig.clientIp", "did you mean clientIP?"]),
    ("service-affinity-timeout", services,
     svc("{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSecond: 60}}, "
         "ports: [{port: 80}]}"),
     [WEB1, "spec.sessionAffinityConfig.clientIP.timeoutSecond", "did you mean timeoutSeconds?"]),
    ("service-external-trafic-policy", services,
     svc("{type: NodePort, externalTraficPolicy: Local, ports: [{port: 80}]}"),
     [WEB1, "spec.externalTraficPolicy", "did you mean externalTrafficPolicy?"]),
    ("kubectl-yaml-typo-in-status-sibling", services, kubectl_yaml(extra_top="stauts: {}"),
     [DOC1, "Service default/web", "stauts", "did you mean status?"]),
    ("endpoints-top-subset", services, SVC_EXT + "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: "
     "ext}\nsubset: [{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}]}]\n",
     [EXT_EP, "subset", "did you mean subsets?"]),
    ("endpoints-subset-address", services,
     SVC_EXT + endpoints("[{address: [{ip: 192.0.2.1}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].address", "did you mean addresses?"]),
    ("endpoints-address-IP", services,
     SVC_EXT + endpoints("[{addresses: [{IP: 192.0.2.1}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].IP", "did you mean ip?"]),
    ("endpoints-address-nodename", services,
     SVC_EXT + endpoints("[{addresses: [{ip: 192.0.2.1, nodename: node1}], ports: [{port: 80}]}]"),
     [EXT_EP, "subsets[0].addresses[0].nodename", "did you mean nodeName?"]),
    ("endpoints-port-protcol", services,
     SVC_EXT + endpoints("[{addresses: [{ip: 192.0.2.1}], ports: [{port: 80, protcol: UDP}]}]"),
     [EXT_EP, "subsets[0].ports[0].protcol", "did you mean protocol?"]),
    ("endpoints-meta-namepsace", services,
     SVC_EXT + "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: ext, namepsace: default}\n"
               "subsets: []\n",
     [DOC2, "metadata.namepsace", "did you mean namespace?"]),
    ("slice-top-endpoint", services,
     SVC_EXT + eps("endpoint: [{addresses: [192.0.2.1]}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoint", "did you mean endpoints?"]),
    ("slice-endpoint-address", services,
     SVC_EXT + eps("endpoints: [{address: [192.0.2.1]}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].address", "did you mean addresses?"]),
    ("slice-endpoint-nodename", services,
     SVC_EXT + eps("endpoints: [{addresses: [192.0.2.1], nodename: node1}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].nodename", "did you mean nodeName?"]),
    ("slice-conditions-redy", services,
     SVC_EXT + eps("endpoints: [{addresses: [192.0.2.1], conditions: {redy: false}}]\nports: [{port: 80}]"),
     [EXT_SL, "endpoints[0].conditions.redy", "did you mean ready?"]),
    ("slice-port-portt", services,
     SVC_EXT + eps("endpoints: [{addresses: [192.0.2.1]}]\nports: [{portt: 80}]"),
     [EXT_SL, "ports[0].portt", "did you mean port?"]),
    ("policy-top-specs", policies, netpol("{podSelector: {}}").replace("spec:", "specs:"),
     [POL1, "specs", "did you mean spec?"]),
    ("policy-meta-namespce", policies, netpol("{podSelector: {}}", meta=", namespce: prod"),
     ["policies.yml: document 1 (line 1)", "metadata.namespce", "did you mean namespace?"]),
    ("policy-spec-podselector", policies, netpol("{podselector: {}}"),
     [POL1, "spec.podselector", "did you mean podSelector?"]),
    ("policy-selector-matchlabel", policies, netpol("{podSelector: {matchLabel: {app: db}}}"),
     [POL1, "spec.podSelector.matchLabel", "did you mean matchLabels?"]),
    ("policy-port-endport", policies,
     netpol("{podSelector: {}, ingress: [{ports: [{port: 80, endport: 90}]}]}"),
     [POL1, "spec.ingress[0].ports[0].endport", "did you mean endPort?"]),
    ("namespace-meta-label", policies,
     "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, label: {a: b}}\n",
     ["policies.yml: document 1 (line 1), Namespace x: ", "metadata.label", "did you mean labels?"]),
    ("namespace-top-metdata", policies, "apiVersion: v1\nkind: Namespace\nmetdata: {name: x}\n",
     ["policies.yml: document 1 (line 1), Namespace", "metdata", "did you mean metadata?"]),

    # -- claims two Services make on one address or port --
    ("same-externalip-port", services,
     svc("{ports: [{port: 80}], externalIPs: [203.0.113.7]}", "a") + "---\n"
     + svc("{ports: [{port: 80}], externalIPs: [203.0.113.7]}", "b"),
     [DOC2, "Service default/b", "spec.externalIPs[0]", "203.0.113.7",
      "80/TCP", "Service default/a"]),
    ("externalip-on-clusterip", services,
     svc("{clusterIP: 10.96.0.20, ports: [{port: 80}]}", "a") + "---\n"
     + svc("{ports: [{port: 80}], externalIPs: [10.96.0.20]}", "b"),
     [DOC2, "Service default/b", "spec.externalIPs[0]", "10.96.0.20", "Service default/a"]),
    ("same-nodeport", services,
     svc("{type: NodePort, ports: [{port: 80, nodePort: 30080}]}", "a") + "---\n"
     + svc("{type: NodePort, ports: [{port: 81, nodePort: 30080}]}", "b"),
     [DOC2, "Service default/b", "spec.ports[0].nodePort", "30080/TCP", "Service default/a"]),
    ("same-clusterip", services,
     svc("{clusterIP: 10.96.0.20, ports: [{port: 80}]}", "a") + "---\n"
     + svc("{clusterIP: 10.96.0.20, ports: [{port: 80}]}", "b"),
     [DOC2, "Service default/b", "spec.clusterIP", "10.96.0.20", "Service default/a"]),
    ("clusterip-held-by-another", lambda text: services(
        text, previous={"default/a": {"cluster_ip": "10.96.0.20", "node_ports": {}}}),
     svc("{ports: [{port: 80}]}", "a") + "---\n" + svc("{clusterIP: 10.96.0.20, ports: [{port: 80}]}", "b"),
     [DOC2, "Service default/b", "spec.clusterIP", "10.96.0.20", "Service default/a", "allocated"]),
    ("nodeport-held-by-another", lambda text: services(
        text, previous={"default/a": {"cluster_ip": "10.96.0.20", "node_ports": {"TCP/80": 30080}}}),
     svc("{type: NodePort, ports: [{port: 80}]}", "a") + "---\n"
     + svc("{type: NodePort, ports: [{port: 80, nodePort: 30080}]}", "b"),
     [DOC2, "Service default/b", "spec.ports[0].nodePort", "30080", "Service default/a", "allocated"]),
    ("clusterip-is-cluster-dns", lambda text: services(text, dns_ip="10.96.0.10"),
     svc("{clusterIP: 10.96.0.10, ports: [{port: 53, protocol: UDP}]}", "coredns"),
     [DOC1, "Service default/coredns", "spec.clusterIP", "cluster DNS", "podnet_dns_ip"]),
    ("clusterip-is-custom-dns", lambda text: services(text, dns_ip="10.96.0.53"),
     svc("{clusterIP: 10.96.0.53, ports: [{port: 80}]}"),
     [WEB1, "spec.clusterIP", "cluster DNS", "podnet_dns_ip"]),
    ("srv-label-too-long", lambda text: services(text, cluster_domain="cluster.local"),
     svc("{ports: [{name: %s, port: 80}]}" % ("p" * 63)),
     [WEB1, "spec.ports[0].name", "63"]),
    ("dns-name-too-long", lambda text: services(text, cluster_domain=("d" * 60 + ".") * 3 + "local"),
     svc("{ports: [{port: 80}]}", "w" * 60, meta=", namespace: %s" % ("n" * 60)),
     [DOC1, "metadata.name", "253", "cluster_domain"]),

    # -- objects in the wrong file, or of a kind podnet does not read --
    ("service-in-policies-file", policies, svc("{ports: [{port: 80}]}"),
     ["policies.yml: document 1 (line 1), Service", "kind", "services file"]),
    ("endpoints-in-policies-file", policies, "apiVersion: v1\nkind: Endpoints\nmetadata: {name: x}\n",
     ["policies.yml: document 1 (line 1), Endpoints", "kind", "services file"]),
    ("deployment-in-services-file", services,
     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
     [DOC1, "kind", "Deployment is not supported"]),
    ("endpointslice-v1beta1", services, SVC_EXT + eps("endpoints: []\nports: []").replace(
        "discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
     [DOC2, "apiVersion", "discovery.k8s.io/v1"]),
    ("ingress-in-services-file", services,
     "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: w}\n",
     [DOC1, "kind", "Ingress is not supported"]),

    # -- names Kubernetes refuses --
    ("service-name-uppercase", services, svc("{ports: [{port: 80}]}", "Web"),
     [DOC1, "metadata.name", "DNS-1035"]),
    ("service-name-digit-first", services, svc("{ports: [{port: 80}]}", "1web"),
     [DOC1, "metadata.name", "DNS-1035"]),
    ("service-name-64", services, svc("{ports: [{port: 80}]}", "w" * 64),
     [DOC1, "metadata.name", "63"]),
    ("service-namespace-uppercase", services, svc("{ports: [{port: 80}]}", meta=", namespace: Prod"),
     [DOC1, "metadata.namespace", "DNS-1123"]),
    ("service-port-name-uppercase", services, svc("{ports: [{name: HTTP, port: 80}]}"),
     [WEB1, "spec.ports[0].name", "DNS-1123"]),
    ("service-two-ports-unnamed", services, svc("{ports: [{port: 80}, {port: 443}]}"),
     [WEB1, "spec.ports[0].name", "more than one port"]),
    ("service-targetport-name-long", services, svc("{selector: {app: web}, ports: [{port: 80, targetPort: "
                                                   "http-alternative}]}"),
     [WEB1, "spec.ports[0].targetPort", "IANA"]),
    ("slice-without-service-label", services, SVC_EXT + eps("endpoints: []\nports: []", labels="{}"),
     [EXT_SL, "kubernetes.io/service-name", "is required"]),
    ("slice-fqdn", services, SVC_EXT + eps("endpoints: []\nports: []").replace("IPv4", "FQDN"),
     [EXT_SL, "addressType", "IPv4"]),
    ("endpoints-for-nothing", services, endpoints("[]", name="nothing").lstrip("-\n"),
     [DOC1, "Endpoints default/nothing", "no Service default/nothing"]),

    # -- values of the wrong type or range --
    ("port-string-name", services, svc("{ports: [{port: http}]}"),
     [WEB1, "spec.ports[0].port", "integer"]),
    ("port-zero", services, svc("{ports: [{port: 0}]}"), [WEB1, "spec.ports[0].port", "1-65535"]),
    ("port-true", services, svc("{ports: [{port: true}]}"), [WEB1, "spec.ports[0].port", "integer"]),
    ("nodeport-outside-range", services, svc("{type: NodePort, ports: [{port: 80, nodePort: 40000}]}"),
     [WEB1, "spec.ports[0].nodePort", "outside the NodePort range"]),
    ("nodeport-on-clusterip", services, svc("{ports: [{port: 80, nodePort: 30080}]}"),
     [WEB1, "spec.ports[0].nodePort", "only a NodePort"]),
    ("protocol-lower-case", services, svc("{ports: [{port: 80, protocol: tcp}]}"),
     [WEB1, "spec.ports[0].protocol", "TCP|UDP|SCTP"]),
    ("type-lower-case", services, svc("{type: nodeport, ports: [{port: 80}]}"),
     [WEB1, "spec.type", "NodePort"]),
    ("affinity-timeout-too-long", services,
     svc("{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}, "
         "ports: [{port: 80}]}"),
     [WEB1, "timeoutSeconds", "1-86400"]),
    ("selector-list", services, svc("{selector: [app, web], ports: [{port: 80}]}"),
     [WEB1, "spec.selector", "mapping"]),
    ("selector-number-value", services, svc("{selector: {version: 2}, ports: [{port: 80}]}"),
     [WEB1, "spec.selector", "map of strings"]),
    ("etp-on-clusterip", services, svc("{externalTrafficPolicy: Local, ports: [{port: 80}]}"),
     [WEB1, "spec.externalTrafficPolicy", "NodePort"]),
    ("headless-nodeport", services, svc("{type: NodePort, clusterIP: None, ports: [{port: 80}]}"),
     [WEB1, "spec.clusterIP", "headless"]),
    ("policy-port-quoted-number", policies, netpol("{podSelector: {}, ingress: [{ports: [{port: '80'}]}]}"),
     [POL1, "spec.ingress[0].ports[0].port", "without quotes"]),
    ("policy-types-typo", policies, netpol("{podSelector: {}, policyTypes: [ingress]}"),
     [POL1, "spec.policyTypes[0]", "Ingress|Egress"]),

    # -- the inventory: networks that collide, sizes host-local cannot use --
    ("cluster-cidr-covers-lan", lambda _: cidrs("192.168.0.0/16"), None,
     ["cluster_cidr", "192.168.0.0/16", "node1", "192.168.56.0/24"]),
    ("lan-covers-cluster-cidr", lambda _: pod_cidr(None, lan="10.0.0.5/8"), None,
     ["cluster_cidr", "10.244.0.0/16", "node node1's LAN 10.0.0.0/8"]),
    ("second-node-lan-in-cluster", lambda _: cidrs(nodes=[
        {"name": "node1", "pod_cidr": None, "persisted": None, "node_network": "192.168.56.11/24"},
        {"name": "node2", "pod_cidr": None, "persisted": None, "node_network": "10.244.7.2/24"}]), None,
     ["cluster_cidr", "node node2's LAN 10.244.7.0/24"]),
    ("pod-cidr-slash-32", lambda _: pod_cidr("10.244.0.0/32"), None,
     ["node node1", "pod_cidr", "/32", "host-local"]),
    ("pod-cidr-slash-31", lambda _: pod_cidr("10.244.0.0/31"), None,
     ["node node1", "pod_cidr", "/31", "host-local"]),
    ("pod-cidr-host-bits", lambda _: pod_cidr("10.244.0.1/24"), None,
     ["node node1", "pod_cidr", "10.244.0.1/24"]),
    ("mask-too-small", lambda _: cidrs(mask=31), None, ["node_cidr_mask_size", "/31"]),
    ("persisted-pod-cidr-garbage", lambda _: persisted(5), None,
     ["node node1", "/etc/podnet/node.json", "5"]),
    ("service-cidr-overlaps-cluster", lambda text: services(text, service_cidr="10.244.0.0/16"),
     svc("{ports: [{port: 80}]}"), ["service_cidr", "10.244.0.0/16", "cluster_cidr"]),
    ("service-cidr-inside-cluster", lambda text: services(text, service_cidr="10.244.128.0/20"),
     svc("{ports: [{port: 80}]}"), ["service_cidr", "10.244.128.0/20", "cluster_cidr"]),
    ("service-cidr-loopback", lambda text: services(text, service_cidr="127.0.0.0/8"),
     svc("{ports: [{port: 80}]}"), ["service_cidr", "127.0.0.0/8", "loopback"]),
    ("service-cidr-ipv6", lambda text: services(text, service_cidr="fd00::/108"),
     svc("{ports: [{port: 80}]}"), ["service_cidr", "fd00::/108", "IPv4"]),
    ("node-port-range-reversed", lambda text: services(text, node_port_range="32767-30000"),
     svc("{ports: [{port: 80}]}"), ["node_port_range", "32767-30000"]),
    ("persisted-allocations-list", lambda _: allocations_from([1, 2]), None,
     ["/etc/podnet/services/allocations.json", "list", "remove it"]),
    ("persisted-allocations-string", lambda _: allocations_from({"default/web": "10.96.0.20"}), None,
     ["/etc/podnet/services/allocations.json", "default/web", "remove it"]),
    ("persisted-allocations-ports", lambda _: allocations_from(
        {"default/web": {"cluster_ip": "10.96.0.20", "node_ports": [30080]}}), None,
     ["/etc/podnet/services/allocations.json", "default/web", "node_ports"]),
    ("persisted-allocations-key", lambda _: allocations_from({"web": {"cluster_ip": "10.96.0.20"}}), None,
     ["/etc/podnet/services/allocations.json", "web", "namespace/name"]),

    # -- test pods in the inventory (podnet_test_pods) --
    ("pod-lables", pods, [{"name": "web", "replicas": 1, "lables": {"app": "web"}}],
     ["pods[0] (web)", "lables", "did you mean labels?"]),
    ("pod-image", pods, [{"name": "web", "replicas": 1, "image": "nginx"}],
     ["pods[0] (web)", "image", "unknown"]),
    ("pod-port-containerport-typo", pods, [{"name": "web", "replicas": 1, "ports": [{"containerport": 80}]}],
     ["pods[0] (web)", "ports[0]", "containerport", "did you mean containerPort?"]),
    ("pod-replica-typo", pods, [{"name": "web", "replica": 2, "node": "node1"}],
     ["pods[0] (web)", "replica", "did you mean replicas?"]),
    ("pod-unknown-node", pods, [{"name": "web", "node": "node9"}],
     ["pods[0] (web)", "node9"]),
    ("pod-sctp-port", pods,
     [{"name": "web", "replicas": 1, "ports": [{"containerPort": 80, "protocol": "SCTP"}]}],
     ["pods[0] (web)", "ports[0]", "protocol"]),
]

FILE_CASES = [
    # -- any encoding, any size: bytes that are not UTF-8, aliases that expand --
    ("latin-1-label", services_file, SVC_HEAD.encode() + b"metadata: {name: web, labels: {team: caf\xe9}}\n",
     ["services.yml", "line 3", "UTF-8", "0xe9"]),
    ("utf16-file", services_file, "apiVersion: v1\n".encode("utf-16"), ["services.yml", "UTF-8"]),
    ("binary-file", services_file, b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe", ["services.yml", "UTF-8"]),
    ("policies-latin-1", policies_file,
     b"# \xa9 2026\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
     ["policies.yml", "line 1", "UTF-8"]),
    ("node-json-truncated", node_record,
     b'{"node": "node1", "pod_ci', ["node.json", "not the JSON", "remove it"]),
    ("node-json-list", node_record, b'["10.244.0.0/24"]', ["node.json", "JSON object", "list"]),
    ("node-json-latin-1", node_record, b'{"node": "n\xf6de1"}', ["node.json", "not the JSON"]),
    ("bomb-in-ports", services_file, bomb("spec: {ports: *h}\n"), ["services.yml", "spec.ports[0]"]),
    ("bomb-in-selector", services_file, bomb("spec: {selector: {app: *h}, ports: [{port: 80}]}\n"),
     ["services.yml", "spec.selector"]),
    ("bomb-in-externalips", services_file, bomb("spec: {externalIPs: *h, ports: [{port: 80}]}\n"),
     ["services.yml", "spec.externalIPs[0]"]),
    ("bomb-as-name", services_file, bomb("metadata: {name: *h}\n", head=SVC_HEAD),
     ["services.yml", "metadata.name"]),
    ("bomb-in-policy", policies_file,
     bomb("spec: {podSelector: {matchLabels: *h}}\n",
          head="apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n"),
     ["policies.yml", "spec.podSelector.matchLabels"]),
]


ERRORS = (ManifestError, PodSpecError, PodCIDRError, AnsibleFilterError)


@pytest.mark.parametrize(("call", "argument", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_refused_in_the_plan_naming_file_object_and_field(call, argument, expected):
    with pytest.raises(ERRORS) as refused:
        call(argument)
    message = str(refused.value)
    for part in expected:
        assert part in message
    assert len(message) < 1000, message[:300]


@pytest.mark.parametrize(("call", "data", "expected"), [case[1:] for case in FILE_CASES],
                         ids=[case[0] for case in FILE_CASES])
def test_any_bytes_are_a_clear_error_of_bounded_size(call, data, expected, tmp_path):
    with pytest.raises((AnsibleFilterError, RecordError)) as refused:
        call(data, tmp_path)
    message = str(refused.value)
    for part in expected:
        assert part in message
    assert len(message) < 1000, message[:300]


def test_the_suite_has_eighty_cases_and_more():
    assert len(CASES) + len(FILE_CASES) >= 80


# --- legal but surprising: a warning naming the object, and the run goes on -------------------

def test_endpoints_without_node_behind_local_policy_are_warned_about():
    warnings = []
    text = (svc("{type: NodePort, externalTrafficPolicy: Local, ports: [{port: 80}]}", "ext")
            + endpoints("[{addresses: [{ip: 192.0.2.1}, {ip: 192.0.2.2, nodeName: node1}], "
                        "ports: [{port: 80}]}]")
            + eps("endpoints: [{addresses: [192.0.2.3]}]\nports: [{port: 80}]").replace("document", "x"))
    model = load_services(text, "services.yml", PODS, warn=warnings.append)
    assert [p["endpoints"] for p in model["services"][0]["ports"]][0][0]["ip"] == "192.0.2.1"
    assert warnings == [
        EXT_EP + "subsets[0].addresses[0]: 192.0.2.1 has no nodeName, and Service default/ext has "
        "externalTrafficPolicy: Local: it is local to no node, so traffic from outside the cluster to it is "
        "dropped on every node (set nodeName, or use externalTrafficPolicy: Cluster)",
        "services.yml: document 3 (line 11), EndpointSlice default/ext-1: endpoints[0]: 192.0.2.3 has no "
        "nodeName, and Service default/ext has externalTrafficPolicy: Local: it is local to no node, so "
        "traffic from outside the cluster to it is dropped on every node (set nodeName, or use "
        "externalTrafficPolicy: Cluster)"]


def test_endpoints_without_node_behind_cluster_policy_are_no_warning():
    warnings = []
    load_services(svc("{type: NodePort, ports: [{port: 80}]}", "ext")
                  + endpoints("[{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}]}]"),
                  "services.yml", PODS, warn=warnings.append)
    assert warnings == []


def test_an_external_name_service_is_warned_it_gets_no_addresses():
    """podnet's DNS answers the CNAME without chasing it (docs/dns.md): the plan says so."""
    warnings = []
    load_services(svc("{type: ExternalName, externalName: db.example.com}", "db"), "services.yml", PODS,
                  warn=warnings.append)
    assert len(warnings) == 1
    assert warnings[0].startswith("services.yml: document 1 (line 1), Service default/db: spec.externalName: "
                                  "answered as a CNAME to db.example.com without its addresses")


# --- and what must still pass: the strictness refuses typos, not real manifests ---------------

GOOD = [
    ("kubectl-get-o-yaml", kubectl_yaml()),
    ("k3s-endpointslice", SVC_EXT + eps(
        "endpoints:\n- addresses: [192.0.2.1]\n  conditions: {ready: true, serving: true, terminating: "
        "false}\n  nodeName: node1\n  targetRef: {kind: Pod, name: ext-0, namespace: default}\n  zone: z1\n"
        "  hints: {forZones: [{name: z1}]}\n"
        "ports: [{name: '', port: 80, protocol: TCP, appProtocol: http}]")),
    ("endpoints-with-hostname-and-targetref", SVC_EXT + endpoints(
        "[{addresses: [{ip: 192.0.2.1, hostname: db-0, nodeName: node1, targetRef: {kind: Pod, name: db-0}}],"
        " ports: [{port: 80, protocol: TCP, appProtocol: tcp}]}]")),
    ("externalip-public", svc("{ports: [{port: 80}], externalIPs: [203.0.113.7, 198.51.100.1]}")),
    ("same-externalip-other-port", svc("{ports: [{port: 80}], externalIPs: [203.0.113.7]}", "a") + "---\n"
     + svc("{ports: [{port: 443}], externalIPs: [203.0.113.7]}", "b")),
    ("same-externalip-other-protocol", svc("{ports: [{port: 53}], externalIPs: [203.0.113.7]}", "a") + "---\n"
     + svc("{ports: [{port: 53, protocol: UDP}], externalIPs: [203.0.113.7]}", "b")),
    ("policy-beside-services", WEB + "---\n" + netpol("{podSelector: {}}")),
]


@pytest.mark.parametrize("text", [case[1] for case in GOOD], ids=[case[0] for case in GOOD])
def test_real_manifests_still_load(text):
    load_services(text, "services.yml", PODS, dns_ip="10.96.0.10", cluster_domain="cluster.local")
    load_policies([(text, "services.yml")], PODS)


def test_a_claim_keeps_what_nobody_else_holds():
    """The address an earlier run gave a Service that left the file is free to claim."""
    model = load_services(svc("{clusterIP: 10.96.0.20, ports: [{port: 80}]}", "b"), "services.yml", PODS,
                          previous={"default/a": {"cluster_ip": "10.96.0.20", "node_ports": {}}})
    assert model["services"][0]["cluster_ip"] == "10.96.0.20"


def test_the_cluster_dns_address_is_never_allocated():
    model = load_services(svc("{ports: [{port: 80}]}"), "services.yml", PODS, service_cidr="10.96.0.0/28",
                          dns_ip="10.96.0.11")
    assert model["services"][0]["cluster_ip"] == "10.96.0.12"


def test_policies_file_in_the_services_position_holds_anything(tmp_path):
    (tmp_path / "services.yml").write_text(WEB)
    (tmp_path / "policies.yml").write_text(netpol("{podSelector: {}}"))
    paths = [str(tmp_path / "services.yml"), str(tmp_path / "policies.yml")]
    model = filters.podnet_policy_model(paths, PODS, "10.244.0.0/16", paths[0])
    assert [p["name"] for p in model["policies"]] == ["p"]
