"""Load problems from local files: jsonl, json, parquet, or a directory saved by HF `datasets`.

Three record forms, each checked at load time (an error names the file, the record, the field
and what was expected; nothing is coerced):

* **answer** (MATH/GSM8K): ``prompt`` and ``answer`` (a string or a number; a ``\\boxed{}``
  answer is unwrapped);
* **assert tests** (HumanEval): ``prompt`` and ``tests`` (or HumanEval's own ``test``), optional
  ``entry_point`` (the harness then calls ``check(<entry_point>)``) and ``canonical_solution``;
* **stdin/stdout tests**: ``prompt``, ``inputs`` and ``outputs``, equally long lists of strings.

A chat-format ``prompt`` (a list of ``{"role", "content"}`` messages) is kept as such; the trainer
renders it with the tokenizer's chat template. Other column names map onto these with ``fields``
(``task.fields`` in the config, e.g. ``{prompt: question}`` for GSM8K). Nothing is downloaded: a
path that does not exist is an error naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlvr_explore.metrics.answers import extract_boxed


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None


def _records(path: Path) -> list:
    if path.is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):
            raise ValueError(f"{path}: a DatasetDict; point to one split, e.g. {path}/train")
        return [dict(r) for r in dataset]
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(_text(path).splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        return rows
    if path.suffix == ".json":
        try:
            data = json.loads(_text(path))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        return data
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported format; use .jsonl, .json, .parquet or a `datasets` directory")


DEFINES_CHECK = re.compile(r"^def check\(", re.MULTILINE)
FIELDS = ("prompt", "answer", "tests", "test", "entry_point", "canonical_solution", "inputs", "outputs")


def _is_chat(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value))


def _problem(record: dict, where: str, verifier: str | None) -> dict:
    def fail(field: str, expected: str):
        if field not in record:
            raise ValueError(f"{where}: no '{field}' column ({expected} expected); the record has {sorted(record)}. "
                             f"If one of them holds it, map it with task.fields: --set task.fields.{field}=COLUMN")
        raise ValueError(f"{where}: field '{field}' must be {expected}, got {repr(record[field])[:80]}")

    if not (isinstance(record.get("prompt"), str) or _is_chat(record.get("prompt"))):
        fail("prompt", "a string or a chat (a list of {role, content} messages)")
    problem = {"prompt": record["prompt"]}
    if "test" in record and "tests" not in record:  # HumanEval names it `test`
        record = {**record, "tests": record["test"]}
    has_tests, has_io = "tests" in record, "inputs" in record or "outputs" in record
    if has_tests and has_io:
        raise ValueError(f"{where}: has both assert tests ('tests') and stdin/stdout tests ('inputs'/'outputs'); keep one")
    if has_tests:
        if not isinstance(record["tests"], str):
            fail("tests", "Python source (a string)")
        problem["tests"] = record["tests"]
        if DEFINES_CHECK.search(record["tests"]) and record.get("entry_point") is None:
            raise ValueError(f"{where}: 'tests' defines check() but there is no 'entry_point', so nothing would call "
                             "it and every program would pass; add the entry point (HumanEval form)")
        if record.get("entry_point") is not None:
            if not (isinstance(record["entry_point"], str) and record["entry_point"].isidentifier()):
                fail("entry_point", "the name of the function the tests check")
            problem["entry_point"] = record["entry_point"]
    if has_io:
        for key in ("inputs", "outputs"):
            if not (isinstance(record.get(key), list) and record[key] and all(isinstance(x, str) for x in record[key])):
                fail(key, "a non-empty list of strings")
        if len(record["inputs"]) != len(record["outputs"]):
            raise ValueError(f"{where}: {len(record['inputs'])} inputs but {len(record['outputs'])} outputs")
        problem.update(inputs=record["inputs"], outputs=record["outputs"])
    is_code = has_tests or has_io
    if verifier == "code" and not is_code:
        raise ValueError(f"{where}: the code verifier needs 'tests' (or 'test') with asserts, or 'inputs' and 'outputs'; "
                         f"the record has {sorted(record)}")
    if "canonical_solution" in record:
        if not isinstance(record["canonical_solution"], str):
            fail("canonical_solution", "a string")
        problem["canonical_solution"] = record["canonical_solution"]
    if "answer" in record or not is_code:
        answer = record.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            fail("answer", "a string or a number")
        answer = str(answer)
        problem["answer"] = extract_boxed(answer) or answer
    elif "canonical_solution" in problem:
        problem["answer"] = problem["canonical_solution"]  # what SFT imitates
    return {"task": "code" if is_code else "math", **problem}


def load_problems(path: str | Path, fields: dict | None = None, limit: int | None = None,
                  verifier: str | None = None) -> list[dict]:
    """Problems from a local file; ``fields`` maps our field names to the file's columns
    (``{"prompt": "question"}``); ``verifier="code"`` requires test fields in every record."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    fields = fields or {}
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"task.fields: unknown field(s) {unknown}; map any of {', '.join(FIELDS)} to a column name")
    problems = []
    for index, record in enumerate(_records(path)):
        where = f"{path}: record {index + 1}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object with 'prompt' and 'answer' (or test fields)")
        missing = sorted(column for column in fields.values() if column not in record)
        if missing:
            raise ValueError(f"{where}: no column {missing} (task.fields maps to it); the record has {sorted(record)}")
        record = {**record, **{ours: record[column] for ours, column in fields.items()}}
        problems.append(_problem(record, where, verifier))
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{path}: no records")
    return problems
