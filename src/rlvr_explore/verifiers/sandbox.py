"""Run untrusted code in a bubblewrap sandbox, and decide its verdict outside it.

The policy is an adversary: it is paid for whatever verdict it can forge, so nothing the program
does can count as a pass except what is checked outside its reach (threat model: docs/reliability.md).

Isolation (``isolation="bwrap"``): new PID, network, IPC, UTS, cgroup and mount namespaces; a
read-only view of ``/usr`` and the interpreter's prefixes and nothing else of the host (no project,
no ``$HOME``, no ``/etc``, an empty environment); writable only a fresh size-capped ``/tmp`` (the
working directory) and ``/dev/shm``; ``--die-with-parent`` and a new session. As root the harness
drops to a uid of the sandbox's own (``UidPool``) before any untrusted line runs, bwrap keeping
only CAP_SETUID/CAP_SETGID for it; as another user bwrap maps it to 65534 in a user namespace that
cannot nest another. The harness then sets rlimits (CPU, address space, file size, processes,
open files, no core). The wall-clock timeout kills bwrap, whose PID namespace dies with it, so
nothing outlives the verdict; a run that ran out of time because other load held the CPU is
marked ``starved`` (the verifier judges it again, alone). Output is read with a cap.

Verdicts:

* **assert tests** (HumanEval's ``check(candidate)``, or plain asserts): the sandbox only serves
  calls of the program's functions, in plain data (``plain.py``); the tests run in the trusted
  checker (``checker.py``), a process of its own that holds no program code, and a pass is its
  verdict that ``check`` returned.
* **stdin/stdout tests** (``inputs``/``outputs``): each input runs in its own sandbox and the
  parent compares the output as text, so nothing in the program can vouch for itself.
"""

from __future__ import annotations

import functools
import json
import math
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from rlvr_explore.documented import documented

NOBODY = 65534
INSIDE = "/sandbox"  # where the harness and the program's files appear inside the sandbox

# Runs inside the sandbox before any untrusted line: drop privileges, set limits, then run the
# program (stdio mode) or load it and serve the checker's calls (serve mode). Nothing here is
# trusted once the program has run: the checker outside decodes every reply strictly.
HARNESS = r'''
import json, os, resource, sys, types

def main():
    config = json.loads(sys.argv[1])
    write, exit_now, files = os.write, os._exit, config["files"]
    write(config["started_fd"], b"1")  # the sandbox is set up: any failure from here on is the program's
    os.close(config["started_fd"])
    if config["drop_to"] is not None:
        os.setgroups([])
        os.setgid(config["drop_to"])
        os.setuid(config["drop_to"])
    for name, value in config["limits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if config["mode"] == "stdio":
        sys.argv = ["program.py"]
        import runpy
        runpy.run_path(files + "/program.py", run_name="__main__")
        return
    plain = types.ModuleType("plain")
    exec(compile(open(files + "/plain.py").read(), "plain.py", "exec"), plain.__dict__)
    requests, replies = config["request_fd"], config["reply_fd"]

    def send(reply):
        data = json.dumps(reply, separators=(",", ":")).encode()
        data = len(data).to_bytes(4, "big") + data
        while data:
            data = data[write(replies, data):]

    def receive():
        data = b""
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            chunk = os.read(requests, 1 << 20)
            if not chunk:
                exit_now(0)
            data += chunk
        return plain.loads(data[4:])

    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    try:
        exec(compile(open(files + "/program.py").read(), "solution.py", "exec"), module.__dict__)
    except BaseException:
        exit_now(1)
    send({"loaded": True})
    while True:
        name, args, kwargs = receive()
        try:
            given = plain.encode(args)
            value = module.__dict__[name](*args, **kwargs)
            reply = {"value": plain.encode(value)}
            left = plain.encode(args)
            if left != given:  # mutated in place: the checker updates its own arguments
                reply["args"] = left
        except plain.NotPlain as error:
            reply = {"unplain": str(error)}
        except BaseException as error:
            try:
                reply = {"raised": type(error).__name__, "message": str(error)[:200]}
            except BaseException:
                reply = {"raised": "Exception", "message": ""}
        send(reply)

main()
'''

LIMITS = {  # rlimit name -> the SandboxConfig field that sets it (MB fields are converted)
    "RLIMIT_CPU": "cpu_s", "RLIMIT_AS": "memory_mb", "RLIMIT_FSIZE": "file_mb", "RLIMIT_NPROC": "processes",
    "RLIMIT_NOFILE": "open_files",
}


@dataclass
class SandboxConfig:
    """Limits of the code sandbox; the wall-clock timeout is the verifier's ``timeout_s``."""

    isolation: str = documented("bwrap", "bwrap: bubblewrap namespaces as uid 65534 (docs/reliability.md); none: no isolation at all, a warning at every start")
    cpu_s: int = documented(0, "CPU seconds per program (0: the wall-clock timeout rounded up, plus one)")
    memory_mb: int = documented(1024, "address-space limit per process")
    scratch_mb: int = documented(64, "size of the writable /tmp (also the working directory)")
    shm_mb: int = documented(16, "size of /dev/shm")
    file_mb: int = documented(16, "largest file a program may write")
    processes: int = documented(8, "processes and threads per sandbox (as root each sandbox has a uid of its own; "
                                   "otherwise they count against this user's processes)")
    open_files: int = documented(64, "open file descriptors per process")
    output_kb: int = documented(1024, "stdout read per program; more is a failure")
    python: str | None = documented(None, "interpreter for the program (default: this one's base interpreter, without the project's venv)")

    def rlimits(self, timeout_s: float) -> dict[str, int]:
        values = {
            "cpu_s": self.cpu_s or math.ceil(timeout_s) + 1, "memory_mb": self.memory_mb << 20,
            "file_mb": self.file_mb << 20, "processes": self.processes, "open_files": self.open_files,
        }
        return {name: values[key] for name, key in LIMITS.items()} | {"RLIMIT_CORE": 0}


class SandboxUnavailable(OSError):
    """The sandbox cannot run on this machine; the message says why and what to do."""


@dataclass
class ProgramRun:
    """What the parent saw of one program: only ``passed`` decides a reward."""

    passed: bool
    returncode: int | None
    stdout: bytes = field(default=b"", repr=False)
    timed_out: bool = False
    output_capped: bool = False
    started: bool = True  # False: bwrap could not set the sandbox up (see stderr)
    stderr: bytes = field(default=b"", repr=False)
    unsupported: str | None = None  # the tests made a call the checker's protocol cannot carry
    checker_error: str | None = None  # the trusted side failed (a prompt that does not run alone)
    unplain: str | None = None  # the program returned what is not plain data (a value forge, or an object)
    starved: bool = False  # out of time because other load kept it from the CPU (see ``starved``)


# ------------------------------------------------------------------ the bubblewrap command


@functools.lru_cache(maxsize=None)
def interpreter(python: str | None) -> tuple[str, tuple[str, ...]]:
    """(real path of the interpreter, the prefixes it needs read-only)."""
    exe = os.path.realpath(python or getattr(sys, "_base_executable", None) or sys.executable)
    if not os.access(exe, os.X_OK):
        raise SandboxUnavailable(f"sandbox.python: {exe} is not an executable interpreter")
    query = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"
    done = subprocess.run([exe, "-I", "-c", query], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SandboxUnavailable(f"sandbox.python: {exe} does not run: {done.stderr.strip()[-500:]}")
    prefixes = {os.path.realpath(p) for p in json.loads(done.stdout)} | {os.path.dirname(os.path.dirname(exe))}
    return exe, tuple(sorted(p for p in prefixes if not p.startswith("/usr") or p == "/usr"))


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def bwrap_command(config: SandboxConfig, data_fds: dict[str, int], argv: list[str]) -> list[str]:
    """The bwrap command line; ``data_fds`` maps a file name under /sandbox to a readable fd."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "the code verifier needs bubblewrap (bwrap) to isolate untrusted programs, and it is not installed: "
            "`apt-get install bubblewrap` (Debian/Ubuntu; `make install` does this as root), `dnf install bubblewrap` "
            "(Fedora). To run programs without any isolation instead, set sandbox.isolation=none (unsafe).")
    exe, prefixes = interpreter(config.python)
    command = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
               "--unshare-uts", "--unshare-cgroup", "--hostname", "sandbox"]
    if os.geteuid() == 0:  # keep two capabilities so the harness can drop to a uid that owns nothing
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        command += ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    command += _system_mounts()
    for prefix in prefixes:
        if prefix != "/usr":  # its parents are made traversable: bwrap would make /root 0700
            parents = [str(p) for p in reversed(Path(prefix).parents) if str(p) != "/"]
            command += [arg for parent in parents for arg in ("--perms", "0755", "--dir", parent)]
            command += ["--ro-bind", prefix, prefix]
    command += ["--proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--size", str(config.scratch_mb << 20), "--tmpfs", "/tmp",
                "--perms", "1777", "--size", str(config.shm_mb << 20), "--tmpfs", "/dev/shm"]
    for name, fd in data_fds.items():
        command += ["--perms", "0444", "--ro-bind-data", str(fd), f"{INSIDE}/{name}"]
    command += ["--remount-ro", "/", "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
                exe, "-I", *argv]
    return command


NAMESPACE_HINTS = ("namespace", "uid map", "user_namespaces", "Operation not permitted", "Permission denied")


@functools.lru_cache(maxsize=None)
def _probe(config_key: tuple) -> None:
    config = SandboxConfig(**dict(config_key))
    fd = _memfd("harness.py", "import os, sys; assert os.getuid() != 0 or sys.argv[1] == 'root'; print('ok')")
    try:
        command = bwrap_command(config, {"probe.py": fd}, [f"{INSIDE}/probe.py", "root" if os.geteuid() == 0 else "user"])
        done = subprocess.run(command, pass_fds=(fd,), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        os.close(fd)
    if done.returncode != 0 or done.stdout.strip() != "ok":
        reason = done.stderr.strip()[-800:]
        hint = ""
        if any(h in reason for h in NAMESPACE_HINTS):
            hint = (" This machine seems to forbid the namespaces bubblewrap needs (unprivileged user namespaces off: "
                    "sysctl kernel.unprivileged_userns_clone=0 or user.max_user_namespaces=0, an AppArmor "
                    "restrict_unprivileged_userns policy, or a container without CAP_SYS_ADMIN); enable them, or run as "
                    "root, or set sandbox.isolation=none (unsafe).")
        raise SandboxUnavailable(f"the bubblewrap sandbox does not start: {reason or 'no output'}.{hint}")


def check_available(config: SandboxConfig) -> None:
    """Raise :class:`SandboxUnavailable` (with the fix) unless the configured isolation works here."""
    if config.isolation not in ("bwrap", "none"):
        raise SandboxUnavailable(f"sandbox.isolation must be bwrap or none, got {config.isolation!r}")
    if config.isolation == "bwrap":
        _probe(tuple(sorted(vars(config).items())))


# ------------------------------------------------------------------ running one program


def _memfd(name: str, text: str) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, text.encode("utf-8", "surrogatepass"))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _read(streams: dict, deadline: float, caps: dict, until: str | None = None) -> tuple[dict[str, bytes], bool, str | None]:
    """Read ``streams`` (name -> pipe) to EOF (of all, or of ``until``) or the deadline: (data,
    timed out, the stream that went past its cap). A stream past its cap stops the reading, except
    stderr, whose excess is dropped."""
    selector = selectors.DefaultSelector()
    for name, pipe in streams.items():
        selector.register(pipe, selectors.EVENT_READ, name)
    data = {name: bytearray() for name in streams}

    def result(timed_out: bool, capped: str | None):
        selector.close()
        return {k: bytes(v[: caps[k]]) if k == "stderr" else bytes(v) for k, v in data.items()}, timed_out, capped

    while selector.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            return result(True, None)
        for key, _ in selector.select(left):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                if key.data == until:
                    return result(False, None)
                continue
            if key.data == "stderr" and len(data["stderr"]) > caps["stderr"]:
                continue
            data[key.data] += chunk
            if len(data[key.data]) > caps[key.data] and key.data != "stderr":
                return result(False, key.data)
    return result(False, None)


class UidPool:
    """As root, each running sandbox drops to a uid of its own (from ``FIRST_UID``, owning nothing
    on the host), so the process limit counts one sandbox's processes and a neighbour cannot
    exhaust it; a uid returns to the pool when its sandbox has ended."""

    FIRST_UID = 1_900_000_000

    def __init__(self):
        self.lock, self.free, self.next = threading.Lock(), [], self.FIRST_UID

    def take(self) -> int:
        with self.lock:
            if self.free:
                return self.free.pop()
            self.next += 1
            return self.next - 1

    def give(self, uid: int) -> None:
        with self.lock:
            self.free.append(uid)


UIDS = UidPool()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_stats() -> dict[int, list[str]]:
    """Every process's ``/proc/<pid>/stat`` fields after its name: state, parent, ..., CPU times."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = stat[stat.rindex(")") + 2:].split()
    return stats


def starved(root_pids: list[int], wall_s: float) -> bool:
    """Whether a run that ran out of time was kept from the CPU by other load: some process of it
    still wanted to run, yet all of its processes together had less than half the time in CPU (a
    program that sleeps is not starved; one whose own processes fill the CPU is not either). Its
    processes are ``root_pids`` and all their descendants (a sandbox's daemons included: orphans
    are adopted by the sandbox's own init, a descendant of bwrap)."""
    stats = _process_stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    cpu, runnable, stack = 0.0, False, list(root_pids)
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        if pid in stats:
            runnable |= stats[pid][0] == "R"
            cpu += (int(stats[pid][11]) + int(stats[pid][12])) / CLOCK_TICKS
    return runnable and cpu < 0.5 * wall_s


CHECKER = Path(__file__).with_name("checker.py")
PLAIN_SOURCE = Path(__file__).with_name("plain.py").read_text()  # copied into every assert-test sandbox
MAX_CALLS = 100_000  # calls of the program per check (HumanEval's tests make about 44)


class WarmChecker:
    """A trusted checker process (``checker.py``) kept for the next problem of the same verifier
    thread: the interpreter's start-up is paid once, not per problem. It runs with the sandbox's
    interpreter, so the tests import what the programs may. One that runs out of time is killed
    and replaced."""

    local = threading.local()

    def __init__(self, python: str):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.folder = tempfile.mkdtemp(prefix="rlvr-checker-")
        self.control = parent
        self.process = subprocess.Popen(
            [python, "-I", str(CHECKER), str(child.fileno())], cwd=self.folder, pass_fds=(child.fileno(),),
            env={"PATH": "/usr/bin:/bin", "HOME": self.folder}, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child.close()
        weakref.finalize(self, WarmChecker._close, parent, self.process, self.folder)

    @staticmethod
    def _close(control, process, folder) -> None:
        control.close()
        _kill(process)
        shutil.rmtree(folder, ignore_errors=True)

    @classmethod
    def for_this_thread(cls, python: str) -> "WarmChecker":
        checker = getattr(cls.local, "checker", None)
        if checker is None or checker.process.poll() is not None:
            checker = cls.local.checker = cls(python)
        return checker

    def start(self, config: dict, fds: list[int]) -> None:
        """Hand over one problem; the verdict comes on the verdict pipe, which closes when it is done."""
        config_fd = _memfd("checker.json", json.dumps(config))
        try:
            socket.send_fds(self.control, [b"check"], [config_fd, *fds])
        finally:
            os.close(config_fd)

    def discard(self) -> None:
        if getattr(self.local, "checker", None) is self:
            self.local.checker = None
        WarmChecker._close(self.control, self.process, self.folder)


def _sandbox_command(config: SandboxConfig, harness_config: dict, texts: dict[str, str], files: dict[str, int],
                     scratch: tempfile.TemporaryDirectory | None) -> tuple[list[str], str | None, dict]:
    """(command, cwd, env) that runs the harness on ``texts`` (name -> text), in the sandbox from
    ``files`` (the same, as readable fds), unisolated from a scratch folder."""
    if config.isolation == "bwrap":
        command = bwrap_command(config, files, [f"{INSIDE}/harness.py", json.dumps(harness_config)])
        return command, None, {"PATH": "/usr/bin:/bin"}
    for name, text in texts.items():
        Path(scratch.name, name).write_text(text, encoding="utf-8", errors="surrogatepass")
    harness_config["files"] = scratch.name
    command = [interpreter(config.python)[0], "-I", f"{scratch.name}/harness.py", json.dumps(harness_config)]
    return command, scratch.name, {"PATH": "/usr/bin:/bin", "HOME": scratch.name}


def run_program(program: str, config: SandboxConfig, timeout_s: float, tests: str | None = None,
                entry_point: str | None = None, prompt: str = "", stdin: str = "") -> ProgramRun:
    """Run ``program`` once. Without ``tests`` (stdin/stdout) it passes if it exits 0, and
    ``stdout`` holds what it printed. With ``tests`` (asserts) the sandbox only serves calls of the
    program's functions, and the trusted checker (``checker.py``, a process of its own that holds
    no program code) runs the prompt and the tests against a proxy: it passes only on the
    checker's verdict that ``check`` returned."""
    mode = "stdio" if tests is None else "serve"
    texts = {"harness.py": HARNESS, "program.py": program} | ({"plain.py": PLAIN_SOURCE} if tests is not None else {})
    opened = {name: _memfd(name, text) for name, text in texts.items()}
    pipes = {name: os.pipe() for name in ("started", "stderr")}  # name -> (read end, write end)
    if mode == "serve":
        pipes |= {name: os.pipe() for name in ("request", "reply", "verdict")}
    scratch = None if config.isolation == "bwrap" else tempfile.TemporaryDirectory(prefix="rlvr-unisolated-")
    sandbox, streams = None, {}
    uid = UIDS.take() if config.isolation == "bwrap" and os.geteuid() == 0 else None
    try:
        harness_config = {"mode": mode, "started_fd": pipes["started"][1], "limits": config.rlimits(timeout_s),
                          "files": INSIDE, "drop_to": uid}
        sandbox_fds = [*opened.values(), pipes["started"][1]]
        if mode == "serve":
            harness_config |= {"request_fd": pipes["request"][0], "reply_fd": pipes["reply"][1]}
            sandbox_fds += [pipes["request"][0], pipes["reply"][1]]
        command, cwd, env = _sandbox_command(config, harness_config, texts, opened, scratch)
        sandbox = subprocess.Popen(
            command, cwd=cwd, env=env, start_new_session=True, stderr=pipes["stderr"][1], pass_fds=sandbox_fds,
            stdin=subprocess.PIPE if mode == "stdio" else subprocess.DEVNULL,
            stdout=subprocess.PIPE if mode == "stdio" else subprocess.DEVNULL)
        if mode == "serve":
            checker = WarmChecker.for_this_thread(interpreter(config.python)[0])
            checker.start({"prompt": prompt, "tests": tests, "entry_point": entry_point, "max_calls": MAX_CALLS},
                          [pipes["request"][1], pipes["reply"][0], pipes["verdict"][1]])
        for name, (read_end, write_end) in list(pipes.items()):
            os.close(write_end)
            if name in ("request", "reply"):
                os.close(read_end)  # both ends now belong to the two processes
            else:
                streams[name] = os.fdopen(read_end, "rb", buffering=0)
        pipes.clear()
        if mode == "stdio":
            streams["stdout"] = sandbox.stdout
            _feed(sandbox, stdin)
        caps = {"verdict": 4096, "started": 1, "stderr": 4096, "stdout": config.output_kb << 10}
        deadline = time.monotonic() + timeout_s
        # the verdict is the checker's, whatever the program's side still does; stdio waits for the program
        data, timed_out, capped = _read(streams, deadline, caps, until="verdict" if mode == "serve" else None)
        capped = capped is not None  # stdout past its cap; stderr past its cap is only dropped
        if mode == "stdio":
            try:
                if not (timed_out or capped):
                    sandbox.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        load = timed_out and starved([sandbox.pid], timeout_s)  # the checker waits on the program's replies
        _kill(sandbox)  # also ends the sandbox's PID namespace, so no daemon outlives the verdict
        if mode == "serve" and timed_out:
            checker.discard()  # it may be held in the tests or in a call: a fresh one for the next problem
        code = sandbox.returncode if mode == "stdio" else (None if timed_out else 0)
        ok = code == 0 and not timed_out and not capped
        verdict = data.get("verdict", b"")
        passed = ok and (verdict == b"pass" if mode == "serve" else True)
        kind, _, detail = verdict.decode(errors="replace").partition(":")  # the checker's "kind:detail"
        said = {name: detail if kind == name else None for name in ("unsupported", "error", "unplain")}
        return ProgramRun(passed, code, data.get("stdout", b""), timed_out, capped, started=data["started"] == b"1",
                          stderr=data["stderr"], unsupported=said["unsupported"], checker_error=said["error"],
                          unplain=said["unplain"], starved=load)
    finally:
        if sandbox is not None and sandbox.returncode is None:
            _kill(sandbox)
        for stream in streams.values():
            stream.close()
        for fd in [*opened.values(), *(end for ends in pipes.values() for end in ends)]:
            os.close(fd)
        if scratch is not None:
            scratch.cleanup()
        if uid is not None:
            UIDS.give(uid)


def _feed(process: subprocess.Popen, text: str) -> None:
    """Write the program's stdin from a thread, so a program that never reads cannot block us."""
    def feed():
        try:
            process.stdin.write(text.encode("utf-8", "surrogatepass"))
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass

    threading.Thread(target=feed, daemon=True).start()


def same_output(printed: bytes, expected: str) -> bool:
    """Output equality as text, up to trailing spaces on a line and trailing blank lines."""
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.rstrip().splitlines()]

    try:
        return lines(printed.decode("utf-8")) == lines(expected)
    except UnicodeDecodeError:
        return False
