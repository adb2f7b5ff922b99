"""Pure core of podnet_dns: Service DNS records, rendered as dnsmasq configuration.

What CoreDNS's kubernetes plugin answers, from the services model (docs/services.md):

    <service>.<namespace>.svc.<domain>            A     the ClusterIP (headless: every ready endpoint)
    <a-b-c-d>.<service>.<namespace>.svc.<domain>  A     one per endpoint of a headless Service
    _<port>._<proto>.<service>.<namespace>.svc.<domain>  SRV  named ports
    <reversed IP>.in-addr.arpa                    PTR   ClusterIPs and headless endpoints
    <service>.<namespace>.svc.<domain>            CNAME external_name of an ExternalName Service

dnsmasq answers with the aa flag, and NXDOMAIN with an SOA, only on an address it serves
as an authoritative server (`auth-server`); there it forwards nothing. Its recursive
listener answers cluster names without aa and NXDOMAIN without SOA, and it refuses to
forward to itself ("ignoring nameserver - local interface"). So an instance is two
processes sharing one port number P:

    front  DNS_IP:P     recursive: the cluster zone and its reverse zones go to the auth
                        process, everything else to the upstream servers
    auth   127.0.0.1:P  authoritative for the cluster zone (auth-zone), answers nothing else

Port 53 of DNS_IP is DNATed to the active instance's P by podnet's own nftables table, so an
update starts a whole new instance on the other port and swaps the table (docs/dns.md).

No I/O here: the module reads and runs, this decides.
"""

import ipaddress
import re
import struct

DEFAULT_DOMAIN = "cluster.local"
# kube-dns's ClusterIP by Kubernetes' convention (kubeadm): the service CIDR's tenth address,
# which the ClusterIP allocator never hands out (services.model). The one place podnet says it.
CLUSTER_DNS_OFFSET = 10
DEFAULT_TTL = 5
# Blue and green: the instance ports an update alternates between.
DEFAULT_PORTS = (10053, 10054)
# Where the auth process of an instance listens: never reachable from pods.
AUTH_LISTEN = "127.0.0.1"
FAMILY = "ip"
DEFAULT_TABLE = "podnet-dns"
# The label podnet gives the DNS address on lo: whatever carries it is podnet's to remove.
ADDRESS_LABEL = "lo:podnet"
# The DNS Service itself, as a cluster's kube-dns Service is named.
KUBE_DNS = ("kube-system", "kube-dns")

# RFC 1123 host names: labels of letters, digits and '-', not starting or ending with '-'.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")

RR_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "SRV": 33}


class DnsConfigError(ValueError):
    """The DNS settings or the services model cannot be served as asked."""


# --- settings ------------------------------------------------------------------------

def check_domain(domain):
    if not isinstance(domain, str) or not HOST_NAME.match(domain) or len(domain.rstrip(".")) > 200:
        raise DnsConfigError(f"cluster_domain {domain!r} is not a DNS name (labels of letters, digits, '-')")
    return domain.rstrip(".").lower()


def check_dns_ip(dns_ip, service_cidr):
    """The DNS address is a Service address: inside the service CIDR, as kube-dns's ClusterIP is."""
    try:
        address = ipaddress.IPv4Address(dns_ip)
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise DnsConfigError(f"dns_ip {dns_ip!r} is not an IPv4 address") from exc
    cidr = ipaddress.IPv4Network(service_cidr)
    if address not in cidr or address in (cidr.network_address, cidr.broadcast_address):
        raise DnsConfigError(f"dns_ip {dns_ip} is not a usable address of the service CIDR {service_cidr}")
    return str(address)


def cluster_dns_ip(service_cidr, dns_ip=None):
    """The cluster DNS address: dns_ip when given, else the service CIDR's tenth address; checked."""
    if not dns_ip:
        try:
            dns_ip = str(ipaddress.IPv4Network(service_cidr)[CLUSTER_DNS_OFFSET])
        except (ValueError, IndexError) as exc:
            raise DnsConfigError(f"the service CIDR {service_cidr!r} has no address {CLUSTER_DNS_OFFSET} "
                                 "for the cluster DNS: give dns_ip") from exc
    return check_dns_ip(dns_ip, service_cidr)


def check_ports(ports):
    if (not isinstance(ports, (list, tuple)) or len(ports) != 2 or len(set(ports)) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) and 1024 <= p <= 65535 for p in ports)):
        raise DnsConfigError(f"ports {ports!r}: give two different port numbers from 1024 to 65535")
    return tuple(ports)


def check_ttl(ttl):
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 86400:
        raise DnsConfigError(f"ttl {ttl!r} is not a number of seconds from 0 to 86400")
    return ttl


def parse_upstream(text, dns_ip):
    """`IP` or `IP#port` (dnsmasq's spelling) or `IP:port`; the DNS address itself would loop."""
    value = str(text).strip()
    host, _sep, port = value.replace(":", "#", 1).partition("#")
    try:
        address = ipaddress.IPv4Address(host)
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise DnsConfigError(f"upstream {text!r} is not an IPv4 address (optionally with #port)") from exc
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise DnsConfigError(f"upstream {text!r}: port {port!r} is not a number from 1 to 65535")
    if str(address) == dns_ip:
        raise DnsConfigError(f"upstream {text!r} is the cluster DNS address itself: queries would loop")
    return f"{address}#{int(port)}" if port and int(port) != 53 else str(address)


def resolv_conf_nameservers(text):
    """The IPv4 nameservers of a resolv.conf, in order (IPv6 ones are skipped: the
    front forwards over IPv4 only)."""
    servers = []
    for line in (text or "").splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                servers.append(str(ipaddress.IPv4Address(fields[1])))
            except (ipaddress.AddressValueError, ValueError):
                continue
    return servers


def upstream_servers(upstreams, resolv_conf_text, dns_ip):
    """The servers the front forwards other names to: the given list, or else the node's own
    resolv.conf (as a homelab node would), without the cluster DNS address."""
    if upstreams:
        return [parse_upstream(u, dns_ip) for u in upstreams]
    servers = [s for s in resolv_conf_nameservers(resolv_conf_text) if s != dns_ip]
    if not servers:
        raise DnsConfigError("no upstream DNS server: upstreams is empty and the node's resolv.conf lists "
                             "no nameserver other than the cluster DNS address")
    return servers


# --- records -------------------------------------------------------------------------

def service_name(service, domain):
    return f"{service['name']}.{service['namespace']}.svc.{domain}"


def dashed(ip):
    return ip.replace(".", "-")


def reverse_name(ip):
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def _srv_weight(count):
    # Equal shares that add up to about 100, as CoreDNS gives them.
    return max(1, 100 // count)


def _headless_endpoints(service):
    """{ip: [(port, protocol, port name)]} over every port of a headless Service, and its
    port-less addresses (a headless Service without ports: its ready pods)."""
    endpoints = {ip: [] for ip in service.get("addresses") or []}
    for port in service.get("ports") or []:
        for endpoint in port.get("endpoints") or []:
            endpoints.setdefault(endpoint["ip"], []).append(
                (endpoint["port"], port["protocol"], port.get("name") or ""))
    return endpoints


def _ip_key(ip):
    return ipaddress.IPv4Address(ip)


def build_records(model, domain, dns_ip):
    """Every record of the cluster zone, as plain data:

    hosts:  [(names, ip)]  A for each name, PTR ip -> names[0] (dnsmasq's host-record)
    srv:    [(name, priority, weight, port, target)]
    cname:  [(name, target)]

    Sorted, so the same model always renders the same configuration.
    """
    hosts, srv, cname = [], [], []
    names = set()
    for service in model.get("services") or []:
        where = f"Service {service['namespace']}/{service['name']}"
        name = service_name(service, domain)
        names.add((service["namespace"], service["name"]))
        if service.get("type") == "ExternalName":
            target = service.get("external_name") or ""
            if not HOST_NAME.match(target):
                raise DnsConfigError(f"{where}: externalName {target!r} is not a DNS name")
            cname.append((name, target.rstrip(".").lower()))
            continue
        if service.get("cluster_ip"):
            if service["cluster_ip"] == dns_ip:
                raise DnsConfigError(f"{where}: clusterIP {dns_ip} is the cluster DNS address (dns_ip); "
                                     "give the Service another clusterIP or the DNS another address")
            hosts.append(((name,), service["cluster_ip"]))
            for port in service.get("ports") or []:
                if port.get("name"):
                    srv.append((f"_{port['name']}._{port['protocol'].lower()}.{name}", 0, 100,
                                port["port"], name))
            continue
        # Headless: the ready endpoints themselves, each also under its own name.
        endpoints = _headless_endpoints(service)
        for ip in sorted(endpoints, key=_ip_key):
            hosts.append(((f"{dashed(ip)}.{name}", name), ip))
        for port in service.get("ports") or []:
            if not port.get("name") or not port.get("endpoints"):
                continue
            weight = _srv_weight(len(port["endpoints"]))
            for endpoint in port["endpoints"]:
                srv.append((f"_{port['name']}._{port['protocol'].lower()}.{name}", 0, weight,
                            endpoint["port"], f"{dashed(endpoint['ip'])}.{name}"))
    if KUBE_DNS not in names:
        # The DNS Service a cluster's pods know the resolver by.
        kube_dns = f"{KUBE_DNS[1]}.{KUBE_DNS[0]}.svc.{domain}"
        hosts.append(((kube_dns,), dns_ip))
        srv.append((f"_dns._udp.{kube_dns}", 0, 100, 53, kube_dns))
        srv.append((f"_dns-tcp._tcp.{kube_dns}", 0, 100, 53, kube_dns))
    return {"hosts": sorted(hosts, key=lambda h: (h[0], _ip_key(h[1]))), "srv": sorted(srv),
            "cname": sorted(cname)}


def zone_lines(records, ttl):
    """The records as zone-file lines, sorted: what a reviewer reads in a diff."""
    lines = []
    for names, ip in records["hosts"]:
        lines += [f"{name}. {ttl} IN A {ip}" for name in names]
        lines.append(f"{reverse_name(ip)}. {ttl} IN PTR {names[0]}.")
    lines += [f"{name}. {ttl} IN SRV {prio} {weight} {port} {target}." for name, prio, weight, port, target
              in records["srv"]]
    lines += [f"{name}. {ttl} IN CNAME {target}." for name, target in records["cname"]]
    return sorted(set(lines))


def zone_text(lines):
    return "".join(line + "\n" for line in lines)


# --- reverse zones -------------------------------------------------------------------

def reverse_subnets(cidrs):
    """The CIDRs cut at octet boundaries (/8, /16, /24), as in-addr.arpa zones are: a /12
    is sixteen /16 zones. dnsmasq serves reverse zones only for such subnets."""
    subnets = []
    for cidr in cidrs:
        network = ipaddress.IPv4Network(cidr)
        boundary = min(24, -(-network.prefixlen // 8) * 8) if network.prefixlen else 8
        subnets += network.subnets(new_prefix=boundary) if boundary > network.prefixlen else [network]
    return sorted(set(subnets))


def reverse_zone(subnet):
    octets = str(subnet.network_address).split(".")[: subnet.prefixlen // 8]
    return ".".join(reversed(octets)) + ".in-addr.arpa"


# --- dnsmasq configuration -----------------------------------------------------------

HEADER = ("# Managed by podnet (podnet_dns); any change here is replaced on the next run.\n"
          "# {what}\n")


def _common(port, listen):
    return [
        f"port={port}",
        f"listen-address={listen}",
        # Only this address: the other instance uses the same address on its own port.
        "bind-interfaces",
        "no-hosts",
        "no-resolv",
        # podnet finds its processes in /proc (command line and network namespace).
        "pid-file",
    ]


def render_auth_conf(records, settings, port):
    """The authoritative process: the cluster zone and the reverse zones of the service and
    cluster CIDRs, every answer with aa, NXDOMAIN with an SOA whose minimum is the TTL."""
    domain, ttl = settings["domain"], settings["ttl"]
    subnets = reverse_subnets([settings["service_cidr"], settings["cluster_cidr"]])
    covered = [*subnets]
    extra = sorted({ipaddress.IPv4Network(ip) for _name, ip in records["hosts"]
                    if not any(ipaddress.IPv4Address(ip) in s for s in covered)})
    # auth-zone keeps only A records inside its subnets: endpoints outside the cluster
    # (from Endpoints objects) are let in one /32 each.
    zone = ",".join([domain, *(str(s) for s in subnets + extra)])
    lines = _common(port, AUTH_LISTEN) + [
        f"auth-server={KUBE_DNS[1]}.{KUBE_DNS[0]}.svc.{domain},{AUTH_LISTEN}",
        f"auth-zone={zone}",
        f"auth-ttl={ttl}",
        f"local-ttl={ttl}",
    ]
    lines += [f"host-record={','.join(names)},{ip}" for names, ip in records["hosts"]]
    lines += [f"srv-host={name},{target},{port_},{prio},{weight}"
              for name, prio, weight, port_, target in records["srv"]]
    lines += [f"cname={name},{target}" for name, target in records["cname"]]
    what = f"Service DNS, authoritative for {domain} on {AUTH_LISTEN}#{port} (only the front asks it)."
    return HEADER.format(what=what) + "\n".join(lines) + "\n"


def render_front_conf(settings, port, upstreams):
    """The process pods reach: cluster names and cluster reverse lookups to the auth process,
    the rest to the upstream servers."""
    domain, dns_ip = settings["domain"], settings["dns_ip"]
    auth = f"{AUTH_LISTEN}#{port}"
    subnets = reverse_subnets([settings["service_cidr"], settings["cluster_cidr"]])
    zones = [domain] + [reverse_zone(s) for s in subnets]
    lines = _common(port, dns_ip) + [
        # A cached NXDOMAIN would come back without the auth process's aa flag.
        "no-negcache",
        *(f"server=/{zone}/{auth}" for zone in zones),
        *(f"server={server}" for server in upstreams),
    ]
    what = f"Service DNS front on {dns_ip}#{port}: port 53 of {dns_ip} leads here while it is the active one."
    return HEADER.format(what=what) + "\n".join(lines) + "\n"


def render_instance(model, settings, port, upstreams):
    """Both configuration files of the instance on `port`, and its records."""
    records = build_records(model, settings["domain"], settings["dns_ip"])
    return {
        "auth": render_auth_conf(records, settings, port),
        "front": render_front_conf(settings, port, upstreams),
        "zone": zone_lines(records, settings["ttl"]),
    }


def settings_from(model, domain, dns_ip, ttl):
    """Check the settings against the model; the dict the renderers take."""
    if not isinstance(model, dict) or not model.get("service_cidr") or not model.get("cluster_cidr"):
        raise DnsConfigError("the services model lacks service_cidr or cluster_cidr")
    return {
        "domain": check_domain(domain),
        "dns_ip": cluster_dns_ip(model["service_cidr"], dns_ip),
        "ttl": check_ttl(ttl),
        "service_cidr": str(ipaddress.IPv4Network(model["service_cidr"])),
        "cluster_cidr": str(ipaddress.IPv4Network(model["cluster_cidr"])),
    }


def conf_path(conf_dir, port, role):
    return f"{conf_dir.rstrip('/')}/{port}-{role}.conf"


# --- nftables ------------------------------------------------------------------------

def render_table(table, dns_ip, port):
    """Port 53 of the DNS address to the active instance, from pods and outside (prerouting)
    and from the node itself (output). Written exactly as `nft list table` prints it, so
    the live table can be compared as text."""
    rules = "".join(f"\t\tip daddr {dns_ip} {proto} dport 53 dnat to {dns_ip}:{port}\n"
                    for proto in ("udp", "tcp"))
    return (f"table {FAMILY} {table} {{\n"
            "\tchain prerouting {\n"
            "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            f"{rules}"
            "\t}\n\n"
            "\tchain output {\n"
            # nft 1.0.6 refuses the name dstnat in an output chain.
            "\t\ttype nat hook output priority -100; policy accept;\n"
            f"{rules}"
            "\t}\n"
            "}\n")


# nft lists the standard chain priorities by name, and each version names a different set:
# Debian 13's nft 1.1 lists a nat output chain at -100 as `dstnat`, a name Debian 12's
# nft 1.0.6 refuses there. Compared as numbers, one table reads the same on both.
_PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_NAMED_PRIORITY = re.compile(r"\bpriority (%s)\b" % "|".join(_PRIORITY_NAMES))


def same_listing(live, wanted):
    """Does `nft list table` output say what render_table wrote? (whitespace and the
    spelling of chain priorities aside)"""
    def norm(text):
        lines = (" ".join(line.split()) for line in (text or "").splitlines() if line.strip())
        return [_NAMED_PRIORITY.sub(lambda m: "priority %d" % _PRIORITY_NAMES[m.group(1)], line)
                for line in lines]
    return norm(live) == norm(wanted)


def table_port(listing, dns_ip):
    """The instance port the live table leads to, or None."""
    match = re.search(rf"dnat to {re.escape(dns_ip)}:(\d+)", listing or "")
    return int(match.group(1)) if match else None


# --- a DNS query, for the readiness check -------------------------------------------

def encode_query(name, qtype="A", qid=0x5044):
    labels = [label for label in name.rstrip(".").split(".") if label]
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", RR_TYPES[qtype], 1)


def _read_name(message, offset):
    labels, end, hops = [], None, 0
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:
            end = offset + 2 if end is None else end
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            hops += 1
            if hops > 64:
                raise ValueError("compression loop")
            continue
        if length == 0:
            return ".".join(labels) + ".", (offset + 1 if end is None else end)
        labels.append(message[offset + 1:offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length


def decode_response(message):
    """{id, rcode, aa, answers: [(name, type, ttl, data)]} of a DNS response (answer section only)."""
    qid, flags, qdcount, ancount = struct.unpack("!HHHH", message[:8])
    offset = 12
    for _question in range(qdcount):
        _name, offset = _read_name(message, offset)
        offset += 4
    names = {v: k for k, v in RR_TYPES.items()}
    answers = []
    for _answer in range(ancount):
        name, offset = _read_name(message, offset)
        rtype, _rclass, ttl, length = struct.unpack("!HHIH", message[offset:offset + 10])
        offset += 10
        data = message[offset:offset + length]
        if rtype == 1:
            value = str(ipaddress.IPv4Address(data))
        elif rtype in (2, 5, 12):
            value = _read_name(message, offset)[0]
        elif rtype == 33:
            prio, weight, port = struct.unpack("!HHH", data[:6])
            value = f"{prio} {weight} {port} {_read_name(message, offset + 6)[0]}"
        else:
            value = data.hex()
        answers.append((name, names.get(rtype, str(rtype)), ttl, value))
        offset += length
    return {"id": qid, "rcode": flags & 0xF, "aa": bool(flags & 0x0400), "answers": answers}
