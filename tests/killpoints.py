"""Run a changewatch command and kill it with SIGKILL at its Nth file-system change (for tests).

    python tests/killpoints.py ROOT KILL_AT COUNT_FILE MODULE:FUNCTION [ARGS...]

A ``sys.addaudithook`` hook sees every file-system change Python makes — renames, removals,
folder creation, files opened for writing — under ROOT (and the relative ones ``shutil.rmtree``
makes inside it). Before change number KILL_AT (0-based) happens, the process sends itself
SIGKILL, as ``kill -9`` would; KILL_AT -1 never kills; KILL_AT ``EVENT:TEXT`` kills before the first
change of that audit event whose path's last part starts with TEXT (``os.rename:.run.staging-``, staging
folders being named ``.NAME.staging-ID``: between the two renames that replace a folder). COUNT_FILE
receives the changes seen when the process ends normally (a JSON list of ``[event, first path]``), so a
test can run it once to count them, or find one, and then kill it there. MODULE:FUNCTION is called with ARGS as one list
(``changewatch.cli:cli`` parses a command line; ``tests.killpoints:fake_run`` replaces a folder
without the heavy imports).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.chmod", "os.truncate"}


def _path(value: Any) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(value))
    return None


def install(root: str, kill_at: str, count_file: str) -> None:
    """Install the audit hook that counts changes under ``root`` and kills at ``kill_at``."""
    seen: list[list[str]] = []

    def is_change(event: str, args: tuple[Any, ...]) -> bool:
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
            return writes and (_path(path) or "").startswith(root)
        if event not in CHANGES:
            return False
        paths = [_path(a) for a in args if _path(a) is not None]
        relative = event in ("os.remove", "os.rmdir") and args[-1] not in (None, -1)  # with a dir_fd: in rmtree
        return relative or any(p.startswith(root) for p in paths)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if is_change(event, args):
            path = next((p for p in map(_path, args) if p is not None), "")
            wanted, _, text = kill_at.partition(":")
            if str(len(seen)) == kill_at or (text and event == wanted and Path(path).name.startswith(text)):
                os.kill(os.getpid(), signal.SIGKILL)
            seen.append([event, path])

    atexit.register(lambda: Path(count_file).write_text(json.dumps(seen)))
    sys.addaudithook(hook)


def fake_run(args: list[str]) -> None:
    """Replace folder ``args[0]`` with a run whose files all hold the text ``args[1]`` (light:
    imports nothing but ``rs.io.staging``)."""
    from changewatch.rs.io.staging import StagedDir

    outdir, tag = args
    with StagedDir(outdir, {"a.txt", "b.txt", "sub"}) as out:
        out.path("a.txt").write_text(tag)
        out.path("sub").mkdir()
        (out.path("sub") / "c.txt").write_text(tag)
        out.path("b.txt").write_text(tag)


def main(argv: list[str]) -> None:
    root, kill_at, count_file, target, *args = argv
    install(os.path.realpath(root), kill_at, count_file)
    module, function = target.split(":")
    entry = getattr(importlib.import_module(module), function)
    if module == "changewatch.cli":
        entry(args, standalone_mode=True)
    else:
        entry(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])
