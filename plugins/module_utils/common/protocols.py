"""The Service and NetworkPolicy protocols, as Kubernetes spells them and as nft and iptables do.

Standard library only, like everything a module imports: modules run on the nodes, whose
Python has no PyYAML (a fresh Debian server does not), so this table cannot live beside
the manifest reader.
"""

# Kubernetes' protocol -> the kernel tools' name for it.
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
