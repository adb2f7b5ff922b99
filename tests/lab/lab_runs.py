"""Running the project's playbooks against the lab, as the live tests do."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def inventory_args(args=()):
    """`-i` for the lab under test (PODNET_LAB_INVENTORY), unless the caller or molecule
    names an inventory: a test meant for one lab must never converge a lab of another prefix."""
    lab = os.environ.get("PODNET_LAB_INVENTORY")
    if lab and "-i" not in args and "ANSIBLE_INVENTORY" not in os.environ:
        return ("-i", str(pathlib.Path(lab) / "hosts.yml"))
    return ()


def ansible_playbook(*args, timeout=300):
    """ansible-playbook from this venv, in the repository, stdout and stderr together."""
    # Molecule forces colour on; the assertions read plain text.
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    # The lab under test (PODNET_LAB_INVENTORY), unless the caller or molecule names one:
    # a lab of another prefix must never be converged by a test meant for this one.
    args = (*inventory_args(args), *args)
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), *args],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)
