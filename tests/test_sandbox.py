"""The code sandbox against a hostile policy: every forged verdict is 0, nothing outside the
sandbox changes, no process outlives the verdict, the caller survives, honest code passes.

These run the real bubblewrap sandbox (``make test`` installs it); they are not skipped."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rlvr_explore.verifiers import Verifier
from rlvr_explore.verifiers.code import program_of
from rlvr_explore.verifiers.sandbox import SandboxConfig, SandboxUnavailable, check_available, run_program

RIGHT = "def f(x):\n    return x + 1\n"
WRONG = "def f(x):\n    return x\n"
TESTS = "assert f(1) == 2\nassert f(5) == 6\n"


@pytest.fixture(scope="module")
def verifier():
    return Verifier("code", timeout_s=3, workers=2)


def score(verifier, program: str, tests: str = TESTS) -> float:
    return verifier([{"prompt": "", "tests": tests}], [program])[0]


def test_honest_programs_pass_and_wrong_ones_fail(verifier):
    assert score(verifier, RIGHT) == 1.0
    assert score(verifier, WRONG) == 0.0
    assert score(verifier, "```python\n" + RIGHT + "```") == 1.0
    scratch = "open('/tmp/notes.txt', 'w').write('ok')\nimport threading\nthreading.Thread(target=print).start()\n"
    assert score(verifier, scratch + RIGHT) == 1.0  # scratch files and threads are allowed


EXIT_HACKS = {
    "SystemExit(0)": "raise SystemExit(0)",
    "sys.exit() in a test helper": "import sys\ndef f(x):\n    sys.exit(0)",
    "os._exit(0)": "import os\nos._exit(0)",
    "atexit": "import atexit, os\natexit.register(lambda: os._exit(0))",
    "excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)",
    "SIGKILL to itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    "SIGTERM handler exits 0": "import os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\nos.kill(os.getpid(), signal.SIGTERM)",
    "segfault": "import ctypes\nctypes.string_at(0)",
    "garbage on every fd": "import os\nfor fd in range(3, 64):\n    try: os.write(fd, b'0' * 32)\n    except OSError: pass",
    "closing every fd": "import os\nos.closerange(3, 1024)",
    "exit from the tests' check": "import os\ndef f(x):\n    os._exit(0)",
    "threads that exit 0 later": "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), os._exit(0))).start()",
}


@pytest.mark.parametrize("name", sorted(EXIT_HACKS))
def test_exit_and_crash_hacks_score_zero(verifier, name):
    assert score(verifier, WRONG + EXIT_HACKS[name] + "\n") == 0.0
    assert score(verifier, EXIT_HACKS[name] + "\n" + WRONG) == 0.0


def test_a_harness_that_sees_no_token_never_passes():
    run = run_program(RIGHT, SandboxConfig(), 3, tests=TESTS)
    assert run.passed and run.returncode == 0
    forged = run_program(RIGHT + "import os\nos.write(3, b'x' * 32)\nos._exit(0)\n", SandboxConfig(), 3, tests=TESTS)
    assert not forged.passed


def test_nothing_outside_the_sandbox_is_written_read_or_deleted(verifier, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    home = Path.home() / f"rlvr-sandbox-probe-{os.getpid()}"
    project = Path(__file__).resolve().parents[1] / "pyproject.toml"
    attacks = [
        f"open({str(home)!r}, 'w').write('x')",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
        f"import os\nos.remove({str(canary)!r})",
        f"open({str(canary)!r}, 'w').write('changed')",
        f"import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo x > {home}; rm -f {canary}'])",
        f"import multiprocessing.util as u, os\nu.spawnv_passfds('/bin/sh', ['/bin/sh', '-c', 'rm -f {canary}'], [])\nos.wait()",
        "import sys\nopen(sys.executable, 'ab').write(b'x')",
        "open('/sandbox/harness.py', 'w').write('')",
        "import os\nos.makedirs('/usr/local/rlvr-probe')",
    ]
    for attack in attacks:
        assert score(verifier, WRONG + attack + "\n") == 0.0, attack
    assert canary.read_text() == "intact" and not (tmp_path / "new.txt").exists() and not home.exists()
    # a program that passes only if it can read what it must not see
    secret = Path.home() / f"rlvr-sandbox-secret-{os.getpid()}"
    secret.write_text("secret")
    secrets = [f"assert open({str(project)!r}).read()", f"assert open({str(secret)!r}).read()",
               "import os\nassert 'RLVR_CANARY' in os.environ", "assert open('/etc/passwd').read()"]
    if os.geteuid() == 0:  # as root the harness reads the tests before it drops privileges; they stay hidden
        secrets.append("assert 'assert f(1) == 2' in open('/sandbox/tests.py').read()")
    os.environ["RLVR_CANARY"] = "secret"
    try:
        for probe in secrets:
            assert score(verifier, RIGHT + probe + "\n") == 0.0, probe
    finally:
        del os.environ["RLVR_CANARY"]
        secret.unlink()


def _sandbox_processes(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(entry.name)
        except OSError:
            continue
    return found


def test_no_process_outlives_the_verdict_and_the_caller_survives(verifier):
    bystander = subprocess.Popen(["sleep", "60"], user=65534 if os.geteuid() == 0 else None)
    try:
        daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                  "        os.execv('/bin/sleep', ['sleep', '987.654'])\n    os._exit(0)\n")
        attacks = [
            daemon,
            "import ctypes\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n    import os; os.execv('/bin/sleep', ['sleep', '987.654'])",
            "import os\nos.kill(os.getppid(), 9)",
            "import os\nos.killpg(0, 9)",
            "import os\nos.kill(-1, 9)",
            "import os\nfor pid in range(1, 400):\n    try: os.kill(pid, 9)\n    except OSError: pass",
            "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
        ]
        for attack in attacks:
            started = time.monotonic()
            assert score(verifier, WRONG + attack + "\n") == 0.0, attack
            assert time.monotonic() - started < 3 + 5, attack
            assert _sandbox_processes("987.654") == [], attack
        assert bystander.poll() is None, "a sandboxed program killed a process outside"
        assert score(verifier, RIGHT) == 1.0  # and the verifier still works
    finally:
        bystander.kill()
        bystander.wait()


def test_no_network_no_host_sockets(verifier, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0rlvr-sandbox-probe")
    abstract.listen()
    abstract.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        probes = [f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
                  "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(b'\\0rlvr-sandbox-probe')",
                  "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)"]
        for probe in probes:
            assert score(verifier, RIGHT + probe + "\n") == 0.0, probe
        for listener in (server, abstract):
            with pytest.raises(socket.timeout):
                listener.accept()
    finally:
        server.close()
        abstract.close()


def test_resource_limits_hold(verifier):
    shm_before = os.statvfs("/dev/shm").f_bfree if os.path.isdir("/dev/shm") else None
    hogs = {
        "memory": "x = bytearray(4 << 30)",
        "file size": "open('/tmp/big', 'wb').write(b'0' * (200 << 20))",
        "scratch size": "for i in range(100):\n    open(f'/tmp/part{i}', 'wb').write(b'0' * (8 << 20))",
        "/dev/shm": "open('/dev/shm/fill', 'wb').write(b'0' * (100 << 20))",
        "cpu loop": "while True: pass",
        "sleep": "import time\ntime.sleep(60)",
        "open files": "fs = [open('/tmp/f', 'w') for _ in range(10000)]",
        "threads": "import threading, time\nts = [threading.Thread(target=time.sleep, args=(5,)) for _ in range(500)]\n[t.start() for t in ts]",
    }
    for name, hog in hogs.items():
        started = time.monotonic()
        assert score(verifier, RIGHT + hog + "\n") == 0.0, name
        assert time.monotonic() - started < 3 + 5, name
    if shm_before is not None:
        assert os.statvfs("/dev/shm").f_bfree >= shm_before - 1024  # the host's /dev/shm untouched


def test_output_is_read_with_a_cap():
    config = SandboxConfig(output_kb=64)
    flood = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)", config, 5)
    assert not flood.passed and flood.output_capped and len(flood.stdout) <= (64 << 10) + 65536
    quiet = run_program("print('y' * 1000)", config, 5)
    assert quiet.passed and quiet.stdout == b"y" * 1000 + b"\n"


def test_stdin_stdout_tests_are_compared_in_the_parent(verifier):
    problem = {"prompt": "", "inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7"]}
    honest = "a, b = map(int, input().split())\nprint(a + b)"
    assert verifier([problem], [honest]) == [1.0]
    forgeries = [
        "class Always(str):\n    def __eq__(self, other): return True\nprint(Always('anything'))",
        "import os\nos._exit(0)",
        "raise SystemExit(0)",
        "a, b = map(int, input().split())\nprint(a + b)\nprint('extra')",
        "print(3)",  # right for the first input only
    ]
    for forged in forgeries:
        assert verifier([problem], [forged]) == [0.0], forged
    assert verifier([{"prompt": "", "inputs": ["x"], "outputs": ["\u00e9"]}], ["print('\\u00e9')"]) == [1.0]


def test_humaneval_style_program_assembly():
    problem = {"prompt": "from typing import List\n\ndef f(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n", "entry_point": "f"}
    assert program_of(problem, "    return sum(xs)\n") == problem["prompt"] + "    return sum(xs)\n"
    fenced = "Here:\n```python\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n```"
    assert program_of(problem, fenced) == "from typing import List\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n"
    assert program_of({"prompt": "Write f.", "tests": ""}, "def f(): pass") == "def f(): pass"


def test_a_check_that_nothing_calls_pays_nothing(verifier):
    tests = "def check(candidate):\n    assert candidate(1) == 2\n"
    assert verifier([{"prompt": "", "tests": tests}], [WRONG]) == [0.0]  # an error, counted, not a free pass
    assert verifier([{"prompt": "", "tests": tests, "entry_point": "f"}], [RIGHT]) == [1.0]


def test_counts_reach_the_stats():
    verifier = Verifier("code", timeout_s=1, workers=2)
    verifier([{"prompt": "", "tests": TESTS}, {"prompt": ""}, {"prompt": "", "inputs": ["1"], "outputs": ["1"]}],
             ["while True: pass", RIGHT, "print('x' * (4 << 20))"])
    assert verifier.stats["calls"] == 3 and verifier.stats["timeouts"] == 1
    assert verifier.stats["errors"] == 1 and verifier.stats["refusals"] == 2


def test_missing_bubblewrap_refuses_to_start_and_says_how(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match=r"apt-get install bubblewrap.*sandbox.isolation=none"):
        check_available(SandboxConfig(scratch_mb=63))  # a new config: not the cached probe
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        Verifier("code", sandbox=SandboxConfig(scratch_mb=62))


def test_unisolated_mode_is_explicit_and_warns(caplog):
    with caplog.at_level("WARNING"):
        verifier = Verifier("code", timeout_s=3, sandbox=SandboxConfig(isolation="none"))
    assert "WITHOUT isolation" in caplog.text
    assert verifier([{"prompt": "", "tests": TESTS}] * 2, [RIGHT, WRONG + "raise SystemExit(0)"]) == [1.0, 0.0]


def test_signals_to_the_verifier_process_group_are_not_ours(verifier):
    # a program's process group is its own: killing "its" group leaves ours alone
    own_group = os.getpgrp()
    assert score(verifier, WRONG + f"import os, signal\nos.killpg({own_group}, signal.SIGKILL)\n") == 0.0
    assert os.getpgrp() == own_group


def test_a_sandbox_that_fails_to_set_up_is_an_error_not_a_silent_zero(monkeypatch, caplog):
    from rlvr_explore.verifiers import sandbox

    verifier = Verifier("code", timeout_s=3)
    monkeypatch.setattr(sandbox, "_system_mounts", lambda: ["--ro-bind", "/nonexistent-rlvr", "/x"])
    run = run_program(RIGHT, SandboxConfig(), 3, tests=TESTS)
    assert not run.passed and not run.started and b"nonexistent-rlvr" in run.stderr
    with caplog.at_level("WARNING"):
        assert score(verifier, RIGHT) == 0.0
    assert verifier.stats["errors"] == 1 and "did not start" in caplog.text


# ------------------------------------------------------------------ neighbours: no false zeros


@pytest.mark.skipif(os.geteuid() != 0, reason="per-sandbox uids are given as root; otherwise the user's own limit holds")
def test_sandboxes_running_at_once_do_not_share_a_process_limit():
    """Eight honest programs holding threads beside one honest threaded program: each sandbox has
    a uid of its own, so each counts its own processes against sandbox.processes."""
    verifier = Verifier("code", timeout_s=10, workers=9)
    sleeper = ("import threading, time\nthreads = [threading.Thread(target=time.sleep, args=(1.5,)) for _ in range(6)]\n"
               "[t.start() for t in threads]\n" + RIGHT)
    threaded = ("import threading\ndef f(x):\n    out = []\n    workers = [threading.Thread(target=out.append, args=(x,)) "
                "for _ in range(6)]\n    [w.start() for w in workers]\n    [w.join() for w in workers]\n"
                "    return out[0] + 1\n")
    rewards = verifier([{"prompt": "", "tests": TESTS}] * 9, [sleeper] * 8 + [threaded])
    assert rewards == [1.0] * 9


def test_a_neighbour_that_floods_the_cpu_costs_an_honest_program_a_retry_not_its_reward():
    """Seven CPU spinners, each in a session of its own, beside an honest program that needs a
    fair share of the CPU: the honest run, out of time while runnable and short of CPU, is judged
    again alone and paid; the flooding program is not."""
    verifier = Verifier("code", timeout_s=1.5, workers=2)
    spinners = ("import os\nfor _ in range(7):\n    if os.fork() == 0:\n        os.setsid()\n        while True: pass\n"
                "import time\ntime.sleep(3)\n" + WRONG)
    work = "def f(x):\n    total = 0\n    for i in range(5_000_000):\n        total += i & 1\n    return x + 1 + total - 2_500_000\n"
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # one CPU for both sandboxes (they inherit it): the flood starves for sure
    try:
        rewards = verifier([{"prompt": "", "tests": TESTS}] * 2, [spinners, work])
    finally:
        os.sched_setaffinity(0, cpus)
    assert rewards == [0.0, 1.0], (rewards, verifier.stats)
    assert verifier.stats["load_retries"] >= 1 and verifier.stats["starved"] == 0
