"""Stand-in for pypa's get-pip.py, which ansible-test downloads from ci-files.testing.ansible.com.

That host is not reachable from podnet's machines; PyPI is. ansible-test creates each sanity
test's virtual environment without pip and runs this file as `python get_pip.py [pip options]
pip==X --no-setuptools --no-wheel`. Same result: pip from the interpreter's own bundled wheel
(ensurepip, in a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own process,
which would hide the machine's pip configuration), then the requested pip from the index.
"""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
