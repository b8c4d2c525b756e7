"""Load problems from local files: jsonl, json, parquet, or a directory saved by HF `datasets`.

Each record needs a ``prompt`` and an ``answer`` (MATH/GSM8K style; a ``\\boxed{}`` answer is
unwrapped). Nothing is downloaded: a path that does not exist is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlvr_explore.metrics.answers import extract_boxed


def _records(path: Path) -> list[dict]:
    if path.is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):
            raise ValueError(f"{path}: a DatasetDict; point to one split, e.g. {path}/train")
        return [dict(r) for r in dataset]
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        return data
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported format; use .jsonl, .json, .parquet or a `datasets` directory")


def load_problems(path: str | Path, prompt_key: str = "prompt", answer_key: str = "answer", limit: int | None = None) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    problems = []
    for index, record in enumerate(_records(path)):
        where = f"{path}: record {index + 1}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object with '{prompt_key}' and '{answer_key}'")
        missing = [k for k in (prompt_key, answer_key) if k not in record]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}; has {sorted(record)}")
        answer = str(record[answer_key])
        problems.append({"task": "math", "prompt": str(record[prompt_key]), "answer": extract_boxed(answer) or answer})
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{path}: no records")
    return problems
