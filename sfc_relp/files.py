"""Writing output files safely: every file of one run is staged under a unique temporary
name in its target directory and renamed into place only when all are complete, so an error
(disk full, `dot` failing, Ctrl-C) leaves no half-written or half-updated output. Files get
the permissions the umask allows (mkstemp alone would make them 0600).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode a plain `open(path, 'w')` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def safe_name(text: str, fallback: str = "output") -> str:
    """`text` reduced to one harmless path component (letters, digits, '.', '_', '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).lstrip(".")
    return name or fallback


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call `write(temp_path)`, then rename the temp file to `path`; remove it on failure."""
    with StagedFiles(Path(path).parent) as staged:
        write(staged.path(Path(path).name))
        return staged.commit()[0]


class StagedFiles:
    """The files of one run, written under temporary names in `directory`, then renamed together.

    `path(name)` gives the temporary path to write `name` to; `commit()` renames every staged
    file into place (files it replaces are kept aside until all renames succeeded, and put back
    if one fails). Leaving the `with` block without committing removes the temporaries, and
    the directory too if this run created it and it is empty.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.staged: dict[str, str] = {}
        self.created: list[Path] = []
        self.committed = False

    def __enter__(self) -> "StagedFiles":
        missing = []
        probe = self.directory
        while not probe.exists() and probe.parent != probe:
            missing.append(probe)
            probe = probe.parent
        self.directory.mkdir(parents=True, exist_ok=True)
        self.created = missing  # deepest first
        return self

    def path(self, name: str) -> str:
        if name in self.staged:
            return self.staged[name]
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"staged file name must be one path component, got {name!r}")
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        self.staged[name] = tmp
        return tmp

    def commit(self) -> list[Path]:
        """Rename every staged file into place, all or none; the final paths in staging order."""
        mode = default_mode()
        for tmp in self.staged.values():
            os.chmod(tmp, mode)
        done: list[tuple[Path, str | None]] = []
        try:
            for name, tmp in self.staged.items():
                final = self.directory / name
                aside = None
                if final.exists():
                    fd, aside = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".old")
                    os.close(fd)
                    try:
                        os.replace(final, aside)
                    except BaseException:
                        Path(aside).unlink(missing_ok=True)
                        raise
                done.append((final, aside))
                os.replace(tmp, final)
        except BaseException:
            for final, aside in reversed(done):
                if aside is not None:
                    os.replace(aside, final)
                elif final.exists() and final.name in self.staged and not Path(self.staged[final.name]).exists():
                    final.unlink()
            raise
        for _, aside in done:
            if aside is not None:
                Path(aside).unlink(missing_ok=True)
        self.committed = True
        return [self.directory / name for name in self.staged]

    def __exit__(self, *exc) -> None:
        if self.committed:
            return
        for tmp in self.staged.values():
            Path(tmp).unlink(missing_ok=True)
        for directory in self.created:
            try:
                directory.rmdir()
            except OSError:
                break


def stage_dir(target: Path) -> Path:
    """An empty temporary directory beside `target` (same filesystem, so renames are atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".staging"))


def swap_in(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each staged directory onto its target, all or none.

    Each existing target is first renamed aside; if any rename fails, the new directories are
    moved back out and the previous ones restored, then the error is raised. The previous
    directories are deleted only once every swap succeeded.
    """
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for staged, target in pairs:
            aside = None
            if target.exists():
                aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                              suffix=".previous"))
                os.rmdir(aside)
                os.replace(target, aside)
            done.append((staged, target, aside))
            os.replace(staged, target)
    except BaseException:
        for staged, target, aside in reversed(done):
            if target.exists() and not staged.exists():
                os.replace(target, staged)
            if aside is not None and aside.exists():
                os.replace(aside, target)
        raise
    for _, _, aside in done:
        if aside is not None:
            shutil.rmtree(aside)


def apply_umask(root: Path) -> None:
    """mkdtemp makes 0700 directories: give the tree the modes the umask allows."""
    mask = _umask()
    for path in [root, *root.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
