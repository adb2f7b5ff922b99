"""Make podnet's module_utils importable as Ansible would: ansible.module_utils.podnet_*."""

import pathlib
import sys

import ansible.module_utils

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO / "plugins" / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "plugins" / "module_utils"))
sys.path.insert(0, str(REPO))
