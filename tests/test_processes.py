"""django_websocket.processes: whether a pid is alive."""

from __future__ import annotations

import os
import subprocess
import sys

from django_websocket.processes import is_alive


def test_a_running_process_is_alive_and_a_reaped_one_is_not():
    """This process is alive; a child that exited and was reaped is not."""
    assert is_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not is_alive(child.pid)
