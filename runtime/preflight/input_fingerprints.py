"""The inputs of a plan as they are now: each part of `runtime.plan.run_inputs.Inputs` computed
by its one rule (content digests of data, eval files, tokenizer and base; the weight settings;
sftc's own code; library versions).

`runtime.plan.run_inputs` is the identity as plain data (what the compiler's run diff reads from
manifests); this module reads files, checkpoints and datasets to compute it.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.plan.run_inputs import CONSUMERS, PARTS, Inputs

DATA_LIBRARIES = ("datasets", "pyarrow", "tokenizers", "transformers", "sentencepiece", "jinja2", "gguf")
NUMERIC_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml-dtypes", "qwix", "safetensors")
# files of a checkpoint directory that hold weights (the rest is its config, tokenizer, chat template)
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")


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
    from runtime.preflight.prepare import trained_tokenizer_dir

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


def _source_roots() -> list[Path]:
    """The directories of sftc's own source: the runtime, the compiler beside it, and the grammar
    (in a checkout a directory of its own; installed, inside the compiler's package). Found by
    path, so that the runtime never imports the compiler."""
    runtime = Path(__file__).resolve().parents[1]
    roots = [runtime.parent / "sftlang", runtime]
    if (runtime.parent / "grammar").is_dir():
        roots.append(runtime.parent / "grammar")
    return roots


@functools.cache
def code_identity() -> str:
    """sftc's version and a digest of its source files (the compiler, the runtime, the grammar)."""
    from runtime.platform.file_hashes import file_sha256

    files = []
    for root in _source_roots():
        files += [
            (f"{root.name}/{p.relative_to(root).as_posix()}", p)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".py", ".lark", ".html", ".js", ".css")
        ]
    digest = hashlib.sha256()
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


def _benchmarks(plan: Any) -> Any:
    """The ``benchmarks`` part: the `include` folder's files by content and lm_eval's version."""
    bench = getattr(plan.eval, "benchmarks", None)
    if bench is None:
        return "none"
    folder = Path(bench.include) if bench.include else None
    tasks = _digest_named(_directory_files(folder)) if folder is not None and folder.is_dir() else "none"
    return {"tasks": tasks, **versions(("lm-eval",))}


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
        "benchmarks": lambda: _benchmarks(plan),
    }
    return Inputs({name: compute[name]() for name in (CONSUMERS[consumer] if consumer else PARTS)})
