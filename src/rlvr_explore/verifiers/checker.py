"""The trusted checker of assert tests: run as its own process (``python -I checker.py FD``, kept
warm for the next problem), it holds no line of the program.

It executes the problem's trusted prompt (so the tests' helpers are the prompt's, not the
response's), binds the entry point (and, for plain asserts, every function the tests call that
nothing trusted defines) to a proxy, executes the tests and calls ``check``. The proxy sends each
call's arguments as plain data to the sandbox, where the program serves them, and decodes the
reply into exact built-in values (``plain.py``): an object with a permissive ``__eq__``, a
subclass of ``str`` or a shadowed builtin never reaches the tests. The verdict is "``check``
returned, and nothing went wrong in the protocol on the way" (a program that died, sent what is
not plain data, or a call the protocol cannot carry is no pass, even if the tests swallowed the
exception); nothing the sandbox sends is a vote.

Supported beyond plain values: an argument the program mutates in place (a list, dict or set) is
updated in the caller as the program left it; an iterator or generator the program returns comes
back as an iterator over its items; an exception the program raises is raised in the tests as the
built-in exception of that name, or the prompt's exception class of that name (anything else as a
RuntimeError). Not supported, and reported as such (never a silent verdict): arguments that are
not plain data (callbacks, objects), and results that are not (objects of the program's classes).
"""

import ast
import builtins
import importlib.util
import json
import os
import sys

CONTROL = {"SystemExit", "KeyboardInterrupt", "GeneratorExit"}  # never raised in the checker as themselves
MAX_FRAME = 64 << 20


def load_plain():
    spec = importlib.util.spec_from_file_location("plain", os.path.join(os.path.dirname(__file__), "plain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plain = load_plain()


class Channel:
    """Length-prefixed frames to and from the sandbox."""

    def __init__(self, request_fd: int, reply_fd: int):
        self.request_fd, self.reply_fd = request_fd, reply_fd

    def send(self, payload: bytes) -> None:
        data = len(payload).to_bytes(4, "big") + payload
        while data:
            data = data[os.write(self.request_fd, data):]

    def _read(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = os.read(self.reply_fd, min(size, 1 << 20))
            if not chunk:
                raise EOFError("the program's side closed")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> dict:
        size = int.from_bytes(self._read(4), "big")
        if size > MAX_FRAME:
            raise plain.NotPlain(f"a reply of {size} bytes")
        reply = json.loads(self._read(size))
        if type(reply) is not dict:
            raise plain.NotPlain("a reply is a JSON object")
        return reply


class Protocol:
    """The proxies' state: calls made, and the first thing that makes the run no pass."""

    def __init__(self, channel: Channel, max_calls: int, namespace: dict):
        self.channel, self.max_calls, self.namespace = channel, max_calls, namespace
        self.calls, self.broken, self.unsupported, self.unplain = 0, None, None, None

    def fail(self, kind: str, reason: str):
        if kind == "unsupported":
            self.unsupported = self.unsupported or reason
        elif kind == "unplain":
            self.unplain = self.unplain or reason
        else:
            self.broken = self.broken or reason
        return RuntimeError(reason)

    def call(self, name: str, args: tuple, kwargs: dict):
        self.calls += 1
        if self.calls > self.max_calls:
            raise self.fail("broken", f"more than {self.max_calls} calls")
        try:
            request = plain.dumps([name, list(args), kwargs])
        except plain.NotPlain as error:
            raise self.fail("unsupported", f"{name}() called with an argument that is not plain data ({error})") from None
        try:
            self.channel.send(request)
            reply = self.channel.receive()
        except (OSError, EOFError, ValueError) as error:
            raise self.fail("broken", f"the program stopped answering ({error})") from None
        if "raised" in reply:  # the program's own exception, for the tests to expect or not
            raise self.exception(str(reply["raised"]), str(reply.get("message", "")))
        if "unplain" in reply:
            raise self.fail("unplain", f"{name}() returned what is not plain data: {str(reply['unplain'])[:200]}")
        try:
            value = plain.decode(reply["value"])
            self.write_back(args, plain.decode(reply["args"]) if "args" in reply else None)
        except (plain.NotPlain, KeyError) as error:
            raise self.fail("broken", f"{name}(): a reply that does not decode ({error})") from None
        return value

    def exception(self, name: str, message: str) -> BaseException:
        kind = self.namespace.get(name) if name.isidentifier() else None
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind = getattr(builtins, name, None) if name.isidentifier() and name not in CONTROL else None
        if isinstance(kind, type) and issubclass(kind, Exception):
            try:
                return kind(message)
            except Exception:  # noqa: BLE001 - an exception class with another signature
                pass
        return RuntimeError(f"{name}: {message}")

    @staticmethod
    def write_back(args: tuple, after) -> None:
        """Arguments the program mutated in place, as it left them."""
        if type(after) is not list or len(after) != len(args):
            return
        for given, left in zip(args, after):
            if given == left or type(given) is not type(left):
                continue
            if type(given) is list:
                given[:] = left
            elif type(given) in (dict, set):
                given.clear()
                given.update(left)


def names_to_proxy(tests: str, namespace: dict, entry_point: str | None) -> list[str]:
    """The entry point, and every function the tests call that neither the prompt, the tests nor
    the builtins define: those are the program's."""
    nodes = list(ast.walk(ast.parse(tests)))
    defined = set(namespace)
    defined |= {node.name for node in nodes if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    defined |= {node.id for node in nodes if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    defined |= {node.arg for node in nodes if isinstance(node, ast.arg)}
    defined |= {alias.asname or alias.name.split(".")[0] for node in nodes
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    called = {node.func.id for node in nodes if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    names = {name for name in called if name not in defined and not hasattr(builtins, name)}
    return sorted(names | ({entry_point} if entry_point else set()))


def check(config: dict, channel: Channel) -> bytes:
    """The verdict of one problem: ``pass``, ``unsupported:...``, ``error:...`` or nothing."""
    try:
        loaded = channel.receive()
    except (OSError, EOFError, ValueError):
        return b""
    if loaded.get("loaded") is not True:
        return b""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        try:
            code = compile(config["prompt"], "prompt.py", "exec")
        except SyntaxError:  # a prompt that ends in the bare signature the response continues
            code = compile(config["prompt"] + "    pass\n", "prompt.py", "exec")
        exec(code, namespace)
    except Exception as error:  # noqa: BLE001 - a prompt that is not a module: its helpers are missing
        return f"error:the problem's prompt does not run on its own ({error!r:.200})".encode()
    try:
        tests = compile(config["tests"], "tests.py", "exec")
    except SyntaxError as error:  # the data set's fault, not the program's: said, never a silent 0
        return f"error:the problem's tests do not compile ({error!r:.200})".encode()
    protocol = Protocol(channel, config["max_calls"], namespace)
    for name in names_to_proxy(config["tests"], namespace, config["entry_point"]):
        namespace[name] = (lambda name: lambda *args, **kwargs: protocol.call(name, args, kwargs))(name)
    try:
        exec(tests, namespace)
        if config["entry_point"]:
            namespace["check"](namespace[config["entry_point"]])
    except BaseException:  # noqa: BLE001 - a failed test, or the program's error
        passed = False
    else:
        passed = True
    if protocol.unsupported:
        return f"unsupported:{protocol.unsupported}".encode()
    if passed and protocol.broken is None and protocol.unplain is None:
        return b"pass"
    return f"unplain:{protocol.unplain}".encode() if protocol.unplain else b""


def serve(control_fd: int) -> None:
    """Check problems one after another, kept warm between them: each arrives on the control
    socket as four descriptors (its configuration in a memory file, the requests to the sandbox,
    its replies, the verdict pipe), and every problem gets a fresh namespace. The verifier
    replaces a checker that ran out of time; end of input ends it."""
    import socket

    control = socket.socket(fileno=control_fd)
    while True:
        message, fds, _, _ = socket.recv_fds(control, 16, 4)
        if not message or len(fds) != 4:
            return
        config_fd, request_fd, reply_fd, verdict_fd = fds
        try:
            with os.fdopen(os.dup(config_fd), "rb") as handle:
                config = json.loads(handle.read())
            os.write(verdict_fd, check(config, Channel(request_fd, reply_fd)))
        finally:
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
