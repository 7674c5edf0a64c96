"""Where spec and data bytes come from: the working tree, or a git revision (`REV:path`)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


class FileSystem:
    """The working tree."""

    @property
    def label(self) -> str:
        return ""

    def read_bytes(self, path: Path) -> bytes:
        return Path(path).read_bytes()

    def read_text(self, path: Path) -> str:
        return self.read_bytes(path).decode("utf-8")

    def exists(self, path: Path) -> bool:
        return Path(path).exists()

    def is_file(self, path: Path) -> bool:
        return Path(path).is_file()

    def glob(self, pattern: Path) -> list[Path]:
        pattern = Path(pattern)
        anchor = Path(pattern.anchor) if pattern.is_absolute() else Path(".")
        relative = pattern.relative_to(anchor) if pattern.is_absolute() else pattern
        return sorted(p for p in anchor.glob(str(relative)) if p.is_file())


@dataclass(frozen=True)
class GitRevision(FileSystem):
    """Files as they were at a git revision; paths are relative to the working directory."""

    rev: str
    root: Path  # the repository's top level

    @property
    def label(self) -> str:
        return f"{self.rev}:"

    def _object(self, path: Path) -> str:
        relative = Path(path).resolve().relative_to(self.root)
        return f"{self.rev}:{relative.as_posix()}"

    def read_bytes(self, path: Path) -> bytes:
        done = subprocess.run(["git", "-C", str(self.root), "show", self._object(path)], capture_output=True)
        if done.returncode != 0:
            raise FileNotFoundError(f"{self._object(path)}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def exists(self, path: Path) -> bool:
        try:
            obj = self._object(path)
        except ValueError:
            return False
        done = subprocess.run(["git", "-C", str(self.root), "cat-file", "-e", obj], capture_output=True)
        return done.returncode == 0

    def is_file(self, path: Path) -> bool:
        try:
            obj = self._object(path)
        except ValueError:
            return False
        done = subprocess.run(["git", "-C", str(self.root), "cat-file", "-t", obj], capture_output=True, text=True)
        return done.returncode == 0 and done.stdout.strip() == "blob"

    def glob(self, pattern: Path) -> list[Path]:
        import fnmatch

        relative = Path(pattern).resolve().relative_to(self.root).as_posix()
        done = subprocess.run(
            ["git", "-C", str(self.root), "ls-tree", "-r", "--name-only", self.rev], capture_output=True, text=True
        )
        return sorted(self.root / name for name in done.stdout.splitlines() if fnmatch.fnmatch(name, relative))


def git_revision(spec: str) -> tuple[GitRevision, Path] | None:
    """`REV:path` -> (reader at REV, path), or None when `spec` names a plain file."""
    if ":" not in spec or Path(spec).exists():
        return None
    rev, _, path = spec.partition(":")
    if not rev or not path:
        return None
    done = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    root = Path(done.stdout.strip()).resolve()
    check = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True
    )
    if check.returncode != 0:
        raise FileNotFoundError(f"`{rev}` is not a git revision here")
    return GitRevision(rev, root), Path(path)


def is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def first_match(files: FileSystem, base_dir: Path, path: str) -> Path | None:
    """The file a source's ``path`` (relative to its spec's directory) reads first: a glob's
    first match (None when nothing matches), else the path itself, whether it exists or not."""
    pattern = base_dir / path
    if is_glob(path):
        matches = files.glob(pattern)
        return matches[0] if matches else None
    return pattern


def present_file(files: FileSystem, base_dir: Path, path: str) -> Path | None:
    """`first_match`, when it is a file that is there."""
    found = first_match(files, base_dir, path)
    return found if found is not None and files.is_file(found) else None
