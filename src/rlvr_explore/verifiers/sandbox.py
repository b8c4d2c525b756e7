"""Run untrusted code against tests (DESIGN §6): a fresh subprocess in a temporary directory with
CPU, memory, file-size and process limits, a wall-clock timeout, no network (a new network
namespace where ``unshare`` allows it, and an audit hook that refuses sockets and subprocesses in
any case), and an isolated interpreter (-I). Any failure is reward 0."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HARNESS = r'''
import sys
def _guard(event, args):
    if event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork")):
        raise PermissionError(f"sandbox: {event} is not allowed")
sys.addaudithook(_guard)
namespace = {"__name__": "__main__"}
exec(compile(open("solution.py").read(), "solution.py", "exec"), namespace)
exec(compile(open("tests.py").read(), "tests.py", "exec"), namespace)
'''


def _limits(cpu_s: int, memory_mb: int, file_mb: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))

    return apply


def _network_isolation() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def run_code_tests(code: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 512, file_mb: int = 8) -> float:
    """1.0 if ``code`` followed by ``tests`` (asserts) runs to completion, else 0.0."""
    from rlvr_explore.metrics.answers import extract_code

    with tempfile.TemporaryDirectory(prefix="rlvr-sandbox-") as workdir:
        Path(workdir, "solution.py").write_text(extract_code(code))
        Path(workdir, "tests.py").write_text(tests)
        Path(workdir, "harness.py").write_text(HARNESS)
        command = _network_isolation() + [sys.executable, "-I", "harness.py"]
        try:
            done = subprocess.run(command, cwd=workdir, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                                  preexec_fn=_limits(int(timeout_s) + 1, memory_mb, file_mb), env={"PATH": "/usr/bin:/bin"})
        except (subprocess.TimeoutExpired, OSError):
            return 0.0
        return float(done.returncode == 0)
