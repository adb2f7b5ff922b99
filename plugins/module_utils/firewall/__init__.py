"""Coexisting with a node's own firewall: find what would drop cluster traffic, let it pass."""
