"""Firewalls a homelab node already has, as lab presets (issue 11).

Each preset is the ruleset a real program leaves on a machine, loaded from Debian's own
iptables and nftables packages (no Docker engine, no ufw daemon needed to reproduce them):

  docker   Docker's filter table: FORWARD policy DROP, FORWARD jumping DOCKER-USER first,
           Docker's isolation chains and docker0 rules (iptables-nft)
  nftables a hardened /etc/nftables.conf: table inet filter with input and forward
           policy drop (ssh, ping and established traffic accepted)
  ufw      the chains `ufw enable` writes with its defaults (deny incoming, deny routed,
           allow outgoing, ssh allowed): INPUT and FORWARD policy DROP (iptables-nft)

Every preset counts one foreign rule (a ping to the node) so tests can prove podnet left
the counters of rules it does not own alone.

Usage: firewall_presets.py NETNS apply|clear PRESET
       firewall_presets.py show PRESET   (the preset's ruleset, for iptables-restore or nft -f)
"""

import subprocess
import sys

DOCKER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -p icmp -m icmp --icmp-type 8 -m comment --comment "foreign: ping" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""

UFW = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:ufw-before-input - [0:0]
:ufw-before-forward - [0:0]
:ufw-before-output - [0:0]
:ufw-user-input - [0:0]
:ufw-user-forward - [0:0]
:ufw-user-output - [0:0]
:ufw-reject-input - [0:0]
:ufw-reject-forward - [0:0]
-A INPUT -j ufw-before-input
-A INPUT -j ufw-reject-input
-A FORWARD -j ufw-before-forward
-A FORWARD -j ufw-reject-forward
-A OUTPUT -j ufw-before-output
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw-before-input -p icmp -m icmp --icmp-type 8 -m comment --comment "foreign: ping" -j ACCEPT
-A ufw-before-input -p udp --sport 67 --dport 68 -j ACCEPT
-A ufw-before-input -j ufw-user-input
-A ufw-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-forward -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A ufw-before-forward -j ufw-user-forward
-A ufw-before-output -o lo -j ACCEPT
-A ufw-before-output -m conntrack --ctstate RELATED,ESTABLISHED,NEW -j ACCEPT
-A ufw-user-input -p tcp --dport 22 -j ACCEPT
COMMIT
"""

NFTABLES = """table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    icmp type echo-request counter accept comment "foreign: ping"
    tcp dport 22 accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
  }
  chain output {
    type filter hook output priority filter; policy accept;
  }
}
"""

PRESETS = {"docker": ("iptables", DOCKER), "ufw": ("iptables", UFW), "nftables": ("nft", NFTABLES)}


def _exec(netns, argv, stdin=None):
    return subprocess.run(["ip", "netns", "exec", netns] + argv, input=stdin, text=True,
                          capture_output=True, check=True).stdout


def apply(netns, preset):
    tool, text = PRESETS[preset]
    if tool == "iptables":
        _exec(netns, ["iptables-restore", "-w"], stdin=text)
    else:
        _exec(netns, ["nft", "-f", "-"], stdin="table inet filter {}\ndelete table inet filter\n" + text)


def clear(netns, preset):
    """Take the preset off again (the whole foreign table: the machine had none before)."""
    tool, _text = PRESETS[preset]
    if tool == "iptables":
        _exec(netns, ["nft", "delete", "table", "ip", "filter"])
    else:
        _exec(netns, ["nft", "delete", "table", "inet", "filter"])


def foreign_counter(netns, preset):
    """Packets counted by the preset's foreign ping rule."""
    tool, _text = PRESETS[preset]
    if tool == "iptables":
        chain = "INPUT" if preset == "docker" else "ufw-before-input"
        out = _exec(netns, ["iptables", "-w", "-L", chain, "-v", "-n", "-x"])
    else:
        out = _exec(netns, ["nft", "list", "chain", "inet", "filter", "input"])
        for line in out.splitlines():
            if "foreign: ping" in line:
                return int(line.split("packets", 1)[1].split()[0])
    for line in out.splitlines():
        if "foreign: ping" in line:
            return int(line.split()[0])
    raise LookupError("no foreign rule in %s" % netns)


def show(name):
    return PRESETS[name][1]


if __name__ == "__main__":
    if sys.argv[1] == "show":
        sys.stdout.write(show(sys.argv[2]))
    else:
        netns, action, name = sys.argv[1:4]
        {"apply": apply, "clear": clear}[action](netns, name)
