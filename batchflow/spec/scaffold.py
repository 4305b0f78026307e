"""`batchflow init`: a pipeline repository to copy, with CI recipes that run it unattended."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from .. import __version__
from ..state.atomic import write_atomic

# Template (in batchflow/data/scaffold) -> where it goes. Dotfiles are renamed on the way,
# so the package itself carries no .gitignore.
FILES = {
    "batchflow.yaml": "batchflow.yaml",
    "example.yaml": "pipelines/example.yaml",
    "example.jsonl": "pipelines/data/example.jsonl",
    "Makefile": "Makefile",
    "github-workflow.yml": ".github/workflows/batchflow.yml",
    "gitlab-ci.yml": ".gitlab-ci.yml",
    "gitignore": ".gitignore",
    "env.example": ".env.example",
}


def scaffold(folder: Path, schema: str, say: Callable[[str], None]) -> int:
    """Write the files that do not exist yet (existing ones are left as they are); returns how many."""
    templates = resources.files("batchflow").joinpath("data/scaffold")
    # The CI recipes install the very version that wrote them.
    contents = {
        target: templates.joinpath(name).read_bytes().replace(b"@BATCHFLOW_VERSION@", __version__.encode())
        for name, target in FILES.items()
    }
    contents["schemas/pipeline.schema.json"] = schema.encode()
    written = 0
    for target, data in contents.items():
        path = folder / target
        if path.exists():
            say(f"{path}: exists, left as it is")
            continue
        write_atomic(path, data)
        say(f"wrote {path}")
        written += 1
    return written
