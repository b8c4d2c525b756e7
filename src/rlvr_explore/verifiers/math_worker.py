"""A math-verify worker process: ``python math_worker.py TIMEOUT_S MEMORY_MB``.

Run by path, not as part of the package, so it imports math-verify and nothing of rlvr-explore
(whose metrics would pull torch into every worker). It says ``ready`` once warm, then answers
one JSON line ``[response, reference]`` with one JSON line ``reward`` per request until its
stdin closes, which also ends it when the trainer dies.
"""

from __future__ import annotations

import json
import math
import os
import sys


def math_verify_reward(response: str, reference: str, timeout_s: int = 5) -> float:
    """math-verify's equivalence of the response's last answer and the reference."""
    from math_verify import parse, verify

    gold = parse(reference if "\\boxed" in reference or "$" in reference else f"${reference}$", parsing_timeout=timeout_s)
    return float(verify(gold, parse(response, parsing_timeout=timeout_s), timeout_seconds=timeout_s))


def main() -> None:
    import logging
    import resource

    timeout_s, memory_mb = float(sys.argv[1]), int(sys.argv[2])
    # math-verify's own (signal) timeouts share the budget, so a graceful 0 usually beats the kill
    inner_timeout = max(1, math.floor(timeout_s / 3))
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # whatever a library prints must not corrupt the replies
    logging.disable(logging.WARNING)
    math_verify_reward("\\boxed{1}", "1", inner_timeout)  # warm: the LaTeX grammar loads lazily
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    replies.write("ready\n")
    for line in sys.stdin:
        try:
            response, reference = json.loads(line)
            reward = math_verify_reward(response, reference, inner_timeout)
        except Exception:  # noqa: BLE001 - a hostile answer is reward 0; the parent counts it
            reward = None
        replies.write(json.dumps(reward) + "\n")


if __name__ == "__main__":
    main()
