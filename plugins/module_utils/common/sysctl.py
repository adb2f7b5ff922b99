"""Node sysctls as podnet keeps them: where the kernel shows each, and the one file that
persists them. Shared by the sysctl module (which sets and writes them), node_info (which
reads them for the glance) and the sysctl action plugin (which compares on the controller)."""

import os

HEADER = "# Managed by podnet (podnet_sysctl). Changes here are overwritten.\n"


def proc_path(name):
    """The sysctl's file under /proc/sys (in the network namespace of whoever opens it)."""
    return os.path.join("/proc/sys", name.replace(".", "/"))


def normalized(sysctls):
    """{name: value} as text, the way the module reads its parameter."""
    return {str(name): str(value).strip() for name, value in sysctls.items()}


def render(sysctls):
    """The persisted file's text for normalized sysctls."""
    return HEADER + "".join("%s = %s\n" % (name, sysctls[name]) for name in sorted(sysctls))


def live_value(name):
    """The sysctl's live value as its file prints it (stripped); None when it cannot be read."""
    try:
        with open(proc_path(name)) as handle:
            return handle.read().strip()
    except OSError:
        return None


def same_value(live, wanted):
    """Multi-value sysctls print tab-separated: compared word by word."""
    return live is not None and live.split() == str(wanted).split()
