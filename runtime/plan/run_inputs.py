"""The one identity of a run's inputs: "are these the same inputs?" answered in one place.

Every input that can change what a run computes is fingerprinted here, by one rule each:

    data               each source's own files, by content ("faq")
    eval_data          each separate eval file (`split eval = jsonl(...)`), by content ("faq")
    tokenizer          the tokenizer's files, by content (a trained one: once trained)
    base               the base checkpoint's files, by content: a directory, a GGUF file or a hub
                       snapshot (a hub id without a revision that moved is another snapshot)
    base_config        the base's files other than weights (its config and tokenizer)
    weights            the settings that change the base weights' values: dtype, quantize
    code               sftc's version and the content of its own source files (an editable
                       install keeps one version number across commits)
    data_libraries     versions of the libraries that change how rows are read and rendered
    numeric_libraries  versions of the libraries that change the numbers a model computes

Content digests are sha256 of the bytes (`runtime.platform.file_hashes`: remembered per file by path,
size, mtime and inode, so a multi-GB base is read once per change, not once per command).

Each consumer depends on the parts `CONSUMERS` names, and on nothing else:

    resume       continuing saved weights needs the inputs that shaped them
    plan_cache   `sftc plan`'s counts and estimates (no weights are read)
    baseline     the base model's answers and scores on the eval rows
    run_diff     everything: `sftc diff RUN RUN` shows each part that differs

Review judgements depend on the data of the eval rows they are about (`eval_fingerprints`).
`Inputs.changes` names what changed in the same words for every consumer. A value of None
means "cannot be known without loading it" (a hub dataset, a tokenizer not trained yet); a
key over such a part is None too, so a cache misses rather than hits wrongly.

Light: standard library only at import; the compiler's run diff reads manifests through it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["CONSUMERS", "PARTS", "Inputs", "data_fingerprints", "eval_fingerprints", "eval_rows_fingerprint", "gather"]

VERSION = 1
PARTS = (
    "data",
    "eval_data",
    "tokenizer",
    "base",
    "base_config",
    "weights",
    "code",
    "data_libraries",
    "numeric_libraries",
)
CONSUMERS: dict[str, tuple[str, ...]] = {
    "resume": ("data", "tokenizer", "base", "weights"),
    "plan_cache": ("data", "eval_data", "tokenizer", "base_config", "weights", "code", "data_libraries"),
    "baseline": ("data", "eval_data", "tokenizer", "base", "weights", "code", "data_libraries", "numeric_libraries"),
    "run_diff": PARTS,
}
DATA_LIBRARIES = ("datasets", "pyarrow", "tokenizers", "transformers", "sentencepiece", "jinja2", "gguf")
NUMERIC_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml-dtypes", "qwix", "safetensors")
# files of a checkpoint directory that hold weights (the rest is its config, tokenizer, chat template)
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")
_WHAT = {
    "tokenizer": "the tokenizer's files changed",
    "base": "the base checkpoint's files changed",
    "base_config": "the base checkpoint's config or tokenizer files changed",
    "code": "another sftc (its version or source files)",
}


@dataclass(frozen=True)
class Inputs:
    """The fingerprint of every input part (see the module docstring); plain JSON data."""

    parts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **self.parts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Inputs | None:
        """The inputs a manifest recorded (None: a run recorded before sftc kept them)."""
        if not isinstance(d, Mapping) or d.get("version") != VERSION:
            return None
        return cls({k: d.get(k) for k in PARTS})

    def of(self, consumer: str) -> dict[str, Any]:
        return {name: self.parts.get(name) for name in CONSUMERS[consumer]}

    def key(self, consumer: str) -> str | None:
        """A digest of the parts ``consumer`` depends on; None when one of them is unknown."""
        parts = self.of(consumer)
        if any(_unknown(v) for v in parts.values()):
            return None
        return hashlib.sha256(json.dumps([VERSION, parts], sort_keys=True).encode()).hexdigest()[:32]

    def changes(self, old: Inputs, consumer: str) -> list[str]:
        """``~ data faq: content changed (fingerprint 1a2b3c -> 4d5e6f)`` for each part ``consumer``
        depends on that differs from ``old``: one wording for every consumer."""
        lines: list[str] = []
        for name in CONSUMERS[consumer]:
            before, after = old.parts.get(name), self.parts.get(name)
            if before == after:
                continue
            if name in ("data", "eval_data"):
                label = "data" if name == "data" else "eval data"
                for source in sorted(set(before or {}) | set(after or {})):
                    a, b = (before or {}).get(source), (after or {}).get(source)
                    if a != b:
                        lines.append(f"~ {label} {source}: content changed (fingerprint {_short(a)} -> {_short(b)})")
            elif name in ("weights", "data_libraries", "numeric_libraries"):
                prefix = "model." if name == "weights" else "library "
                for key in sorted(set(before or {}) | set(after or {})):
                    a, b = (before or {}).get(key), (after or {}).get(key)
                    if a != b:
                        lines.append(f"~ {prefix}{key}: {a} -> {b}")
            else:
                lines.append(
                    f"~ {name.replace('_', ' ')}: {_WHAT[name]} (fingerprint {_short(before)} -> {_short(after)})"
                )
        return lines


def _unknown(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, Mapping) and any(v is None for v in value.values())


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value[:12]
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def eval_fingerprints(data: Mapping[str, Any]) -> dict[str, str]:
    """Per source, the fingerprint of the data its eval rows are read from: its separate eval
    file's, else its own files' (a held-out fraction). ``data`` is a manifest (or its inputs)."""
    inputs = data.get("inputs") if "inputs" in data else (data if "eval_data" in data else None)
    if isinstance(inputs, Mapping) and isinstance(inputs.get("data"), Mapping):
        own, separate = dict(inputs["data"]), dict(inputs.get("eval_data") or {})
    else:  # a manifest written before inputs were recorded: its train fingerprints
        own, separate = dict((data.get("data") or {}).get("fingerprints") or {}), {}
    return {name: str(separate.get(name) or digest or "") for name, digest in own.items()}


# ---------------------------------------------------------------- gathering


def _digest_named(files: list[tuple[str, Path]]) -> str:
    """The sha256 over each file's name and content digest, in order."""
    from runtime.platform.file_hashes import file_sha256

    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def _directory_files(directory: Path, weights: bool = True) -> list[tuple[str, Path]]:
    """A checkpoint directory's files by relative name, sorted; hidden ones (a download tool's
    own records) left out; without ``weights``, only its config and tokenizer files."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if (
            path.is_file()
            and not any(part.startswith(".") for part in rel.parts)
            and (weights or not path.name.endswith(_WEIGHTS))
        ):
            out.append((rel.as_posix(), path))
    return out


def _checkpoint(path: str, revision: str | None, weights: bool) -> str:
    """One rule for a base's content: a file (GGUF) by its bytes; a directory or a hub snapshot by
    its files' names and bytes (weights included or not)."""
    p = Path(path).expanduser()
    if p.is_file():
        return _digest_named([(p.name, p)])
    if not p.is_dir():
        from runtime.checkpoints.hf_checkpoint import resolve_checkpoint

        p = resolve_checkpoint(path, revision)
    return _digest_named(_directory_files(p, weights))


def _tokenizer(plan: Any, cache_dir: Path) -> str | None:
    spec = plan.model.tokenizer
    if spec.kind == "base":
        return _checkpoint(plan.model.path, plan.model.revision, weights=False)
    if spec.kind == "hf":
        return _checkpoint(spec.path, spec.revision, weights=False)
    if spec.kind == "sentencepiece":
        return _digest_named([(Path(spec.path).name, Path(spec.path))])
    from runtime.train.prepare import trained_tokenizer_dir

    target = trained_tokenizer_dir(plan, cache_dir)
    return _digest_named(_directory_files(target)) if (target / "tokenizer.json").is_file() else None


def versions(names: tuple[str, ...]) -> dict[str, str]:
    """Each package's installed version ("absent" when it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def code_identity() -> str:
    """sftc's version and a digest of its source files (the compiler, the runtime, the grammar)."""
    import sftlang
    from runtime.platform.file_hashes import file_sha256

    files = []
    for root in (Path(sftlang.__file__).resolve().parent, Path(__file__).resolve().parent):
        files += [
            (f"{root.name}/{p.relative_to(root).as_posix()}", p)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".py", ".lark", ".html", ".js", ".css")
        ]
    from sftlang.parse import grammar_text

    digest = hashlib.sha256(grammar_text().encode())
    for name, path in files:
        digest.update(name.encode() + b"\0" + bytes.fromhex(file_sha256(path)))
    try:
        version = metadata.version("sftc")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}+{digest.hexdigest()[:16]}"


def _part_fingerprint(part: Any, cache_dir: Path, load: bool) -> str | None:
    """The content fingerprint of one source part (its own files, or its separate eval file)."""
    from runtime.data.sources import fingerprint_files, resolve_paths, source_fingerprint

    if part.kind in ("hf_dataset", "disk"):  # fingerprinted by datasets, which must load it
        return source_fingerprint(part, str(cache_dir / "data")) if load else None
    return fingerprint_files(resolve_paths(part))


def data_fingerprints(
    plan: Any, cache_dir: Path, load: bool = True
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(each source's own files, each separate eval file): the ``data`` and ``eval_data`` parts."""
    own: dict[str, str | None] = {}
    separate: dict[str, str | None] = {}
    for spec in plan.data.sources:
        own[spec.name] = _part_fingerprint(spec, cache_dir, load)
        if spec.eval_part() is not None:
            separate[spec.name] = _part_fingerprint(spec.eval_part(), cache_dir, load)
    return own, separate


def eval_rows_fingerprint(spec: Any, cache_dir: Path, load: bool = False) -> str | None:
    """The fingerprint of the data one source's eval rows are read from, as it is now: the rule
    of `eval_fingerprints`, for one source (a missing file of another source does not matter)."""
    return _part_fingerprint(spec.eval_part() or spec, cache_dir, load)


def gather(plan: Any, cache_dir: Path | None = None, load: bool = True, consumer: str | None = None) -> Inputs:
    """The inputs of ``plan`` as they are now: every part, or only those ``consumer`` depends on
    (`sftc plan`'s cache never reads the base's weights). ``load=False`` never loads a dataset (a
    hub or `disk` source's part is then None: unknown). Raises what reading a missing input raises."""
    from runtime.platform.cache_dir import default_cache

    cache_dir = Path(cache_dir or default_cache())
    hf = plan.model.kind == "hf"
    data = functools.cache(lambda: data_fingerprints(plan, cache_dir, load))
    compute = {
        "data": lambda: data()[0],
        "eval_data": lambda: data()[1],
        "tokenizer": lambda: _tokenizer(plan, cache_dir),
        "base": lambda: _checkpoint(plan.model.path, plan.model.revision, weights=True) if hf else "init",
        "base_config": lambda: _checkpoint(plan.model.path, plan.model.revision, weights=False) if hf else "init",
        "weights": lambda: {"dtype": plan.model.dtype, "quantize": plan.model.quantize or "none"},
        "code": code_identity,
        "data_libraries": lambda: versions(DATA_LIBRARIES),
        "numeric_libraries": lambda: versions(NUMERIC_LIBRARIES),
    }
    return Inputs({name: compute[name]() for name in (CONSUMERS[consumer] if consumer else PARTS)})
