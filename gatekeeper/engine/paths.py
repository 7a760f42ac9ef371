"""Files a suite names (``dataset:``, ``prompty:``) stay inside the project unless the user allows more.

A suite is data someone else may have written; without this check ``dataset:
../../home/ci/.aws/credentials`` (or a symlink planted in the project that points there)
puts a credentials file into the prompt and into results.json. The user — not the suite —
widens the roots: ``--allow-path DIR`` or ``allow_paths: [DIR]`` in gatekeeper.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gatekeeper.types import UsageError

ALLOW_HINT = "pass --allow-path DIR or set 'allow_paths: [DIR]' in gatekeeper.yaml to allow it"


def contained(value: str, *, base: Path, roots: Sequence[Path] | None, file: Path, line: int | None,
              field: str) -> Path:
    """``base / value``, once its real location (symlinks followed) is inside one of ``roots``.

    :raises UsageError: (exit 4) naming the suite file, line and field, when it is not.
    """
    candidate = base / value
    if roots is None:
        return candidate
    real = candidate.resolve()
    real_roots = [Path(root).resolve() for root in roots]
    if any(real.is_relative_to(root) for root in real_roots):
        return candidate
    given = Path(value)
    if given.is_absolute():
        how = "an absolute path"
    elif ".." in given.parts:
        how = "a '..' path"
    else:
        how = "a symlink pointing out of it"
    raise UsageError(f"{value!r} resolves to {real}, outside the project root {real_roots[0]} ({how}); "
                     f"{ALLOW_HINT}", file=str(file), line=line, field=field)
