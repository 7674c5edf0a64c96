"""The shipped benchmark tasks' data: JSONL files beside their task YAML, found from any working
directory.

lm_eval hands a task's ``dataset_kwargs.data_files`` to ``datasets.load_dataset``, which reads a
relative path against the working directory, not the YAML's folder. A task here names this
function instead (``custom_dataset: !function local_jsonl.load``; lm_eval resolves ``!function``
next to the YAML) and keeps ``dataset_kwargs: {data_files: {split: file}}``: each file is read
relative to this folder (an absolute path as it is), one JSON object a line, with no cache
written anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(data_files: dict[str, str], **_: Any) -> Any:
    """``{split: Dataset}`` of the JSONL ``data_files`` (lm_eval also passes the task's metadata: ignored)."""
    import datasets

    splits = {}
    for split, name in data_files.items():
        path = HERE / name
        rows = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{number}: invalid JSON: {e.msg}") from None
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)
