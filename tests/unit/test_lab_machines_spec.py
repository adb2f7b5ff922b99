"""The machine lab's inventory: which node is a machine, of which release, with which init."""

import pytest

from lab import podnet_lab

NODES = {"node1": "192.168.56.11", "node2": "192.168.56.12"}


def machines(spec):
    return list(podnet_lab._machines("inv", {"machines": spec}, NODES))


def test_release_alone_means_systemd():
    assert machines({"node1": "bookworm"}) == [("node1", "bookworm", None)]


def test_init_may_be_named():
    assert machines({"node2": {"release": "trixie", "init": "sshd"}}) == [("node2", "trixie", "sshd")]


@pytest.mark.parametrize("spec, words", [
    ({"node9": "bookworm"}, ["podnet_lab.machines[node9]", "not a node"]),
    ({"node1": {"init": "sshd"}}, ["podnet_lab.machines[node1]", "needs `release`"]),
    ({"node1": {"release": "trixie", "boot": "x"}}, ["podnet_lab.machines[node1]", "boot"]),
    ({"node1": {"release": "trixie", "init": "openrc"}},
     ["podnet_lab.machines[node1].init", "'openrc'", "sshd"]),
])
def test_bad_machine_specs_name_the_field(spec, words):
    with pytest.raises(podnet_lab.LabError) as err:
        machines(spec)
    for word in words:
        assert word in str(err.value)
