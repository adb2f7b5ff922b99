"""Every module imports with the standard library and Ansible alone, as on a node.

Modules run in the node's own Python: a fresh Debian server has no PyYAML (the lab's
namespace nodes share this machine's packages and could not notice; a real node did).
"""

import pathlib
import subprocess
import sys

import pytest

MODULES_DIR = pathlib.Path(__file__).resolve().parents[2] / "plugins" / "modules"
MODULES = sorted(p.stem for p in MODULES_DIR.glob("*.py"))

# Make `import yaml` (and anything below it) fail, then import the module.
_IMPORT_WITHOUT = """
import importlib, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "yaml" or name.startswith("yaml."):
            raise ImportError("no PyYAML on a node: " + name)
sys.meta_path.insert(0, Refuse())
importlib.import_module("ansible_collections.podnet.network.plugins.modules." + sys.argv[1])
"""


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_without_pyyaml(module):
    proc = subprocess.run([sys.executable, "-c", _IMPORT_WITHOUT, module], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
