#!/bin/bash
# make sanity: `ansible-test sanity` on podnet.network as a user gets it, that is built with
# ansible-galaxy (galaxy.yml's build_ignore decides what ships) and installed into a
# temporary collections path. Extra arguments go to ansible-test (e.g. --test pylint).
#
# What runs: every sanity test ansible-test 2.19 has for a collection, on Python 3.11 only
# (--python 3.11: the controller's and the nodes' Python on Debian 12; the compile and import
# tests would otherwise want 3.8 to 3.14 interpreters this machine does not have), --local
# (no docker here). Three report "No tests applicable": pslint (no PowerShell), changelog
# (no changelogs/), shellcheck (no shell script ships). tests/sanity/ignore-2.19.txt lists
# what cannot be fixed, with a reason each.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/podnet-sanity.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

ansible-galaxy collection build --output-path "$tmp" "$repo" >/dev/null
# --force: the venv's .pth already makes the repository itself importable as podnet.network,
# which ansible-galaxy would take for an installed copy.
ansible-galaxy collection install --force -p "$tmp/collections" "$tmp"/podnet-network-*.tar.gz >/dev/null

# ansible-test gives each sanity test its own virtual environment (cached under
# ~/.ansible/test/venv) and bootstraps pip there with get-pip.py from a host that is not
# reachable here; it takes a copy from this cache path instead, as its error message says.
pip_version=$(python -c 'import ansible_test, pathlib, re; print(re.search(r"\bpip=.([0-9.]+)", (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()).group(1))')
get_pip=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -e "$get_pip" ]; then
    mkdir -p "$(dirname "$get_pip")" && cp "$repo/tests/sanity/get_pip.py" "$get_pip"
fi

cd "$tmp/collections/ansible_collections/podnet/network"
ansible-test sanity --local --python 3.11 --color no "$@"
