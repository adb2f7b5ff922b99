"""The one /proc reader, where no process is needed: what is never a PID, and a process that
will not stop. Finding and stopping real processes by namespace is in tests/lab/test_process_kernel.py."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import process


@pytest.mark.parametrize("pid", [None, 0, -1, True, "1"])
def test_nonsense_pids_match_nothing(pid):
    assert not process.matches(pid)


def test_terminate_gives_up_loudly(monkeypatch):
    monkeypatch.setattr(process.os, "kill", lambda pid, sig: None)  # a process that ignores everything
    with pytest.raises(process.ProcessError, match="did not stop"):
        process.terminate(12345, lambda pid: True, timeout=0.05, kill_timeout=0.05)
