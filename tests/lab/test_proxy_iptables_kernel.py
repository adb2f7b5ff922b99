"""The iptables Service proxy's text in the kernel: the real iptables-restore takes it, in a
scratch network namespace, and iptables-save shows kube-proxy's chains, updated and removed.

Moved from the unit suite (tests/unit/test_proxy_iptables.py), which stays hermetic: this
needs root, ip and iptables-restore (a throwaway namespace, never the lab's or the root
one). The model and rulesets are the unit tests' own.
"""

import os
import shlex
import shutil
import subprocess

import pytest

from tests.unit.test_proxy_iptables import (
    chain_names,
    changed_model,
    removal_text,
    render_iptables,
    restore_text,
    ruleset_for,
    service,
    sport,
    web_endpoints,
)

# --- live: the text is accepted by the real iptables-restore ----------------------------------

def _live_available():
    return (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("iptables-restore")
            and shutil.which("iptables") and shutil.which("iptables-save") and shutil.which("ip"))


def _kube_chains(save_output):
    tables, table = {}, None
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = []
        elif line.startswith(":KUBE-"):
            tables[table].append(line[1:].split()[0])
    return {t: sorted(tables.get(t, [])) for t in ("filter", "nat")}


@pytest.mark.skipif(not _live_available(), reason="needs root, ip and iptables-restore")
def test_live_restore_in_scratch_namespace():
    netns = "podnet-scratch-ipt-%d" % os.getpid()

    def run(*args, stdin=None):
        return subprocess.run(["ip", "netns", "exec", netns, *args], input=stdin, capture_output=True,
                              text=True, check=False, timeout=60)

    def restore(text):
        done = run("iptables-restore", "--noflush", stdin=text)
        assert done.returncode == 0, done.stderr + "\n" + text

    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
    try:
        old = ruleset_for("node1")
        restore(restore_text(old))
        for table, chain, args in reversed(old["jumps"]):  # -I prepends: insert the last first
            done = run("iptables", "-t", table, "-I", chain, *shlex.split(args))
            assert done.returncode == 0, done.stderr
        saved = run("iptables-save")
        assert saved.returncode == 0, saved.stderr
        assert ":KUBE-SERVICES" in saved.stdout
        assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in (
            saved.stdout)
        assert _kube_chains(saved.stdout) == {t: sorted(c) for t, c in chain_names(old).items()}

        new_web = service("web", "10.96.0.20", [
            sport("http", "TCP", 80, web_endpoints(8080, last="10.244.3.6"), target_port=8080),
        ])
        new = render_iptables(changed_model(web=new_web, **{"np-cluster": None}), "node1")
        restore(restore_text(new, old))
        saved = run("iptables-save")
        assert _kube_chains(saved.stdout) == {t: sorted(c) for t, c in chain_names(new).items()}

        for table, chain, args in new["jumps"]:
            done = run("iptables", "-t", table, "-D", chain, *shlex.split(args))
            assert done.returncode == 0, done.stderr
        restore(removal_text(new))
        saved = run("iptables-save")
        assert _kube_chains(saved.stdout) == {"filter": [], "nat": []}
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=30)
