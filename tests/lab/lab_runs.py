"""Running the project's playbooks against the lab, as the live tests do."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def ansible_playbook(*args, timeout=300):
    """ansible-playbook from this venv, in the repository, stdout and stderr together."""
    # Molecule forces colour on; the assertions read plain text.
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), *args],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)
