"""podnet.network as a user gets it: built by ansible-galaxy, installed into a fresh collections
path, and used by a playbook that lives outside the repository (README, "Install").

Hermetic: no root, no network, no namespaces. The playbook only runs filters on localhost
(writing their output to a file with a local connection) and syntax-checks plays that use the roles
and the collection's playbooks by FQCN. Ansible is kept from seeing the repository: no
ANSIBLE_* variables, no PYTHONPATH, a neutral working directory, and sys.path not scanned for
collections (the venv's .pth makes the repository importable as podnet.network).
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from ansible_collections.podnet.network.plugins.module_utils.pod_network.cidr import allocate_pod_cidrs
from ansible_collections.podnet.network.plugins.module_utils.pod_network.netconf import render_conflist

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(path.name for path in (REPO / "roles").iterdir() if (path / "tasks").is_dir())
PLAYBOOKS = sorted(path.stem for path in (REPO / "playbooks").glob("*.yml"))

USER_PLAY = """\
- name: podnet.network's filters, from a playbook outside the repository
  hosts: localhost
  gather_facts: false
  tasks:
    - name: PodCIDRs for two nodes and one node's CNI conflist
      ansible.builtin.copy:
        dest: "{{ playbook_dir }}/filters.json"
        mode: "0644"
        content: "{{ {'pod_cidrs': pod_cidrs, 'conflist': conflist} | to_json }}"
      vars:
        pod_cidrs: "{{ ['n1', 'n2'] | podnet.network.pod_cidrs({'n1': {}, 'n2': {}}, '10.244.0.0/16', 24) }}"
        conflist: "{{ '10.244.1.0/24' | podnet.network.cni_conflist(1450) }}"
"""


def run(argv, cwd, env, timeout=120):
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, "%s\n%s\n%s" % (" ".join(map(str, argv)), done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's directory (no ansible.cfg) and environment, with the collection installed for them."""
    home = tmp_path_factory.mktemp("user")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("ANSIBLE_") and name != "PYTHONPATH"}
    env.update(HOME=str(home), ANSIBLE_COLLECTIONS_PATH=str(home / "collections"),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_NOCOLOR="1",
               # the local connection's "remote" tmp is under the passwd home (nobody's is /nonexistent)
               ANSIBLE_LOCAL_TEMP=str(home / "tmp"), ANSIBLE_REMOTE_TMP=str(home / "tmp"))
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", home / "dist", REPO], home, env)
    (tarball,) = (home / "dist").glob("podnet-network-*.tar.gz")
    # --force: ansible-galaxy, like Python, would otherwise find the repository through the .pth.
    run([BIN / "ansible-galaxy", "collection", "install", "--force", "-p", home / "collections", tarball],
        home, env)
    return {"home": home, "env": env, "tarball": tarball}


def test_the_tarball_ships_what_a_user_needs(user):
    with tarfile.open(user["tarball"]) as tarball:
        names = set(tarball.getnames())
    tops = {name.split("/")[0] for name in names}
    assert {"roles", "playbooks", "plugins", "meta", "docs", "README.md", "site.yml"} <= tops
    assert {"lab", "molecule", "bench", ".collections", "ansible.cfg", "Makefile"}.isdisjoint(tops)
    assert not any(name.startswith(("tests/unit", "tests/lab")) for name in names)
    # The one inventory that ships is the example, whatever others the checkout holds.
    assert {name.split("/")[1] for name in names if name.startswith("inventory/")} == {"homelab"}
    assert "inventory/homelab/hosts.yml" in names
    assert {"roles/%s/tasks/main.yml" % role for role in ROLES} <= names
    assert "tests/sanity/ignore-2.19.txt" in names  # ansible-test sanity reads it from the installed copy


def test_no_inventory_but_the_example_ships(user, tmp_path):
    """galaxy.yml's build_ignore on a checkout holding more inventories than the example: the
    labs', a private lab's (lab-<prefix>), and a user's copy of homelab with their own hosts
    (README), named anyhow, some close to "homelab"."""
    source = tmp_path / "checkout"
    source.mkdir()
    shutil.copy(REPO / "galaxy.yml", source)
    (source / "README.md").write_text("podnet\n")
    for inventory in ("homelab", "lab", "lab-subnets", "lab-ts", "nodes", "myhomelab", "prod", "h", "home",
                      "homela", "homelab2", "homelab-old", "Homelab"):
        (source / "inventory" / inventory / "group_vars").mkdir(parents=True)
        (source / "inventory" / inventory / "hosts.yml").write_text("all: {}\n")
        (source / "inventory" / inventory / "group_vars" / "all.yml").write_text("{}\n")
    (source / "inventory" / "hosts.yml").write_text("all: {}\n")
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp_path / "dist", source], tmp_path,
        user["env"])
    (built,) = (tmp_path / "dist").glob("podnet-network-*.tar.gz")
    with tarfile.open(built) as tarball:
        shipped = {name for name in tarball.getnames() if name.split("/")[0] == "inventory"}
    assert shipped == {"inventory", "inventory/homelab", "inventory/homelab/hosts.yml",
                       "inventory/homelab/group_vars", "inventory/homelab/group_vars/all.yml"}


def test_installed_where_the_user_said(user):
    listed = run([BIN / "ansible-galaxy", "collection", "list", "podnet.network", "--format", "json"],
                 user["home"], user["env"])
    assert list(json.loads(listed)) == [str(user["home"] / "collections" / "ansible_collections")]


def test_filters_by_fqcn_from_a_playbook_outside_the_repository(user):
    playbook = user["home"] / "filters.yml"
    playbook.write_text(USER_PLAY)
    run([BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
         "ansible_python_interpreter=%s" % sys.executable, playbook], user["home"], user["env"])
    msg = json.loads((user["home"] / "filters.json").read_text())
    nodes = [{"name": name, "pod_cidr": None, "persisted": None} for name in ("n1", "n2")]
    assert msg["pod_cidrs"] == allocate_pod_cidrs("10.244.0.0/16", 24, nodes)
    assert msg["pod_cidrs"]["n2"]["pod_cidr"] == "10.244.1.0/24"
    assert msg["conflist"] == render_conflist("10.244.1.0/24", 1450)


def test_roles_and_playbooks_by_fqcn_pass_a_syntax_check(user):
    playbook = user["home"] / "cluster.yml"
    playbook.write_text(
        "- name: A cluster network from podnet.network's roles\n  hosts: nodes\n  roles:\n"
        + "".join("    - podnet.network.%s\n" % role for role in ROLES)
        + "".join("- name: The collection's %s playbook\n"
                  "  ansible.builtin.import_playbook: podnet.network.%s\n" % (name, name)
                  for name in PLAYBOOKS))
    out = run([BIN / "ansible-playbook", "--syntax-check", "-i", "localhost,", playbook], user["home"],
              user["env"])
    assert "playbook: %s" % playbook in out
