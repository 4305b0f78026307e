"""Where each pipeline's state lives: anchored to the project, never to the current folder.

A project file, `batchflow.yaml` (or `.yml`), at the root of a repository (found by walking
up from each spec, as git and dbt find theirs) holds project defaults. The state
store of a pipeline is, first found first:

1. `state:` in its spec (relative to the spec file);
2. `--state` / `BATCHFLOW_STATE` (a flag or variable the user set on purpose);
3. `state:` in the project file (relative to the project file);
4. `.batchflow/` in the spec's own folder.

Running from another folder therefore finds the same state. A pipeline whose
store holds nothing while another likely store holds its state is refused: a
second, empty state would send (and bill) every request again. For the same
reason `apply` in CI refuses the last default: a fresh checkout's `.batchflow/`
is gone with the runner, and the next scheduled run would pay for everything again.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError

from ..errors import SpecError, SpecErrors, StateError
from ..state.store import RemoteStore, StateStore, open_store
from .models import PROJECT_FILES, LoadedPipeline, Tier, _Model
from .yamlsource import load_documents

DEFAULT_STATE = ".batchflow"


class Project(_Model):
    """`batchflow.yaml` at the root of a repository: defaults for every pipeline in it."""

    version: int = Field(1, description="Project file format version.")
    state: str | None = Field(
        None, description="State store for the project's pipelines: a folder (relative to this file) or URL."
    )
    pipelines: list[str] = Field(
        ["pipelines"], description="Spec files or folders used when a command names none (relative)."
    )
    tier: Tier | None = Field(
        None, description="The tier of the project's pipelines that do not name one (see a spec's `tier`)."
    )


_READ: dict[tuple[Path, int, int], Project] = {}  # project files read, by path, mtime and size


def find_project(folder: Path) -> tuple[Path, Project] | None:
    """The project file in `folder` or its nearest ancestor, read and checked; read once for as
    long as it does not change (a folder of a thousand specs reads it once)."""
    for candidate in [folder, *folder.parents]:
        for name in PROJECT_FILES:
            path = candidate / name
            if path.is_file():
                stat = path.stat()
                key = (path, stat.st_mtime_ns, stat.st_size)
                if key not in _READ:
                    _READ[key] = load_project(path)
                return path, _READ[key]
    return None


def load_project(path: Path) -> Project:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the project file: {exc}", file=str(path)) from None
    docs = list(load_documents(text, str(path)))
    doc = docs[0] if docs else None
    try:
        return Project.model_validate(doc.data if doc and doc.data is not None else {})
    except ValidationError as exc:
        errors = []
        for problem in exc.errors():
            loc = tuple(problem["loc"])
            message = f"unknown field {loc[-1]!r}" if problem["type"] == "extra_forbidden" else problem["msg"]
            errors.append(
                doc.error(loc, message, prefer_key=True) if doc else SpecError(message, file=str(path))
            )
        raise SpecErrors(errors) from None


def default_paths(cwd: Path) -> list[Path]:
    """What a command reads when given no paths: the project's `pipelines`, else ./pipelines."""
    found = find_project(cwd.resolve())
    if found is None:
        return [Path("pipelines")]
    path, project = found
    return [path.parent / p for p in project.pipelines]


def _resolve(base: Path, location: str) -> str:
    return location if "://" in location else str((base / location).resolve())


class Stores:
    """The state store of each pipeline; one store object per location."""

    def __init__(
        self, explicit: str | None = None, *, lock_ttl: float | None = None, lock_timeout: float = 0.0
    ) -> None:
        self.explicit = _resolve(Path.cwd(), explicit) if explicit else None
        self.lock_ttl, self.lock_timeout = lock_ttl, lock_timeout
        self._open: dict[str, StateStore] = {}
        self._project_states: dict[Path, str | None] = {}

    def location(self, pipeline: LoadedPipeline) -> str:
        if pipeline.spec.state is not None:
            return pipeline.resolve(pipeline.spec.state)
        if self.explicit is not None:
            return self.explicit
        spec_folder = pipeline.path.resolve().parent
        return self._project_state(spec_folder) or str(spec_folder / DEFAULT_STATE)

    def _project_state(self, spec_folder: Path) -> str | None:
        """The `state:` of the project file above `spec_folder`, read once per folder: every
        pipeline of a project asks for it."""
        if spec_folder not in self._project_states:
            found = find_project(spec_folder)
            state = found[1].state if found is not None else None
            self._project_states[spec_folder] = _resolve(found[0].parent, state) if found and state else None
        return self._project_states[spec_folder]

    def of(self, pipeline: LoadedPipeline) -> StateStore:
        location = self.location(pipeline)
        if location not in self._open:
            store = open_store(location)
            store.lock_ttl = self.lock_ttl or store.lock_ttl
            store.lock_timeout = self.lock_timeout
            self._open[location] = store
        return self._open[location]

    def named(self, pipeline: LoadedPipeline) -> bool:
        """Whether the user said where the pipeline's state lives (else it is the default)."""
        return (
            pipeline.spec.state is not None
            or self.explicit is not None
            or self._project_state(pipeline.path.resolve().parent) is not None
        )

    def checked(self, pipeline: LoadedPipeline, *, applying: bool = False) -> StateStore:
        """The pipeline's store, refused when it is empty for the pipeline while another
        store it may have used before holds its state (plan and apply); and, for an apply in
        CI, when nobody named it."""
        if applying and in_ci() and not self.named(pipeline):
            raise StateError(
                f"in CI, this apply would keep the state of {pipeline.name!r} in {self.location(pipeline)}, "
                "inside the checkout, which the next run will not have: it would send and pay for "
                "every request again. Name a state: BATCHFLOW_STATE (a gs:// or s3:// URL), or "
                "state: in batchflow.yaml or the spec"
            )
        store = self.of(pipeline)
        if isinstance(store, RemoteStore) or (store.folder(pipeline.name) / "state.json").exists():
            return store
        for other in self._likely(pipeline):
            if other != store.root.resolve() and (other / pipeline.name / "state.json").is_file():
                raise StateError(
                    f"no state in {store.root}, but {other} holds this pipeline's state; "
                    "starting again would send every request again. Point state: (spec or batchflow.yaml) "
                    "or BATCHFLOW_STATE at it, or remove it if it is not wanted"
                )
        return store

    def _likely(self, pipeline: LoadedPipeline) -> list[Path]:
        """Local stores the pipeline may have used: `.batchflow/` in the current folder (the
        default of batchflow 0.1), in the spec's folder and each folder above it; the project's
        and the explicit store."""
        spec_folder = pipeline.path.resolve().parent
        folders = [Path.cwd(), spec_folder, *spec_folder.parents]
        stores = [f / DEFAULT_STATE for f in folders]
        if project_state := self._project_state(spec_folder):
            stores.append(Path(project_state))
        if self.explicit is not None:
            stores.append(Path(self.explicit))
        return list(dict.fromkeys(s.resolve() for s in stores if "://" not in str(s)))


def in_ci() -> bool:
    """Whether a CI service runs this command (GitHub Actions and GitLab CI set CI=true too)."""
    flag = os.environ.get("CI", "").strip().lower()
    return flag in ("true", "1", "yes") or any(os.environ.get(v) for v in ("GITHUB_ACTIONS", "GITLAB_CI"))
