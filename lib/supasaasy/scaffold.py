"""`supasaasy init`: the files a project needs to run SupaSaaSy on its own Supabase.

    supasaasy.toml                       the apps, schedules and worker settings
    .env.example                         every variable the functions read
    functions/<name>/main.py             each function, deployable alone (with
    functions/<name>/requirements.txt    this exact version of the package)
    supabase/migrations/<version>_*.sql  the schema, for `supabase db push`

An existing file is never overwritten unless `force`; one with the same content is
left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from .errors import ScaffoldError as ScaffoldError
from .migrations import package_migrations

# Function folder -> (the functions-framework target its main.py exposes, its factory).
FUNCTIONS = {
    "sync": ("sync", "create_sync_handler"),
    "worker": ("worker", "create_worker_handler"),
    "job-status": ("job_status", "create_job_status_handler"),
    "webhook": ("webhook", "create_webhook_handler"),
}
MAIN = '''"""The `{folder}` function (functions-framework target `{target}`)."""

import gc

from supasaasy.config import function_settings
from supasaasy.handlers import {factory}

{target} = {factory}(function_settings(__file__))
gc.freeze()  # start-up objects live as long as the process: out of every later GC pass
'''


@dataclass(frozen=True)
class ScaffoldFile:
    path: Path
    content: str


def function_main(folder: str) -> str:
    """The `main.py` of the function in `functions/<folder>`."""
    target, factory = FUNCTIONS[folder]
    return MAIN.format(folder=folder, target=target, factory=factory)


def requirements() -> str:
    """What a function folder installs: this package, at this exact version."""
    return f"supasaasy=={metadata.version('supasaasy')}\n"


def project_files(directory: Path) -> list[ScaffoldFile]:
    """Every file `init` writes into `directory`, with its content."""
    template = resources.files("supasaasy").joinpath("project")
    files = [
        ScaffoldFile(directory / "supasaasy.toml", template.joinpath("supasaasy.toml").read_text()),
        ScaffoldFile(directory / ".env.example", template.joinpath("env.example").read_text()),
    ]
    for name in FUNCTIONS:
        folder = directory / "functions" / name
        files += [ScaffoldFile(folder / "main.py", function_main(name)),
                  ScaffoldFile(folder / "requirements.txt", requirements())]  # fmt: skip
    return files + migration_files(directory / "supabase" / "migrations")


def migration_files(folder: Path) -> list[ScaffoldFile]:
    """The package's migrations as Supabase CLI migration files in `folder`."""
    return [ScaffoldFile(folder / m.file_name, m.sql) for m in package_migrations()]


def write_files(files: list[ScaffoldFile], *, force: bool = False) -> list[tuple[Path, str]]:
    """Write `files`. Returns (path, written | unchanged | replaced). Raises ScaffoldError,
    writing nothing, when some exist with other content and not `force`."""
    clashes = [f.path for f in files if f.path.exists() and f.path.read_text() != f.content]
    if clashes and not force:
        names = "\n  ".join(str(path) for path in clashes)
        raise ScaffoldError(
            f"these files exist with other content (--force replaces them):\n  {names}"
        )
    done = []
    for file in files:
        if file.path.exists() and file.path.read_text() == file.content:
            done.append((file.path, "unchanged"))
            continue
        outcome = "replaced" if file.path.exists() else "written"
        file.path.parent.mkdir(parents=True, exist_ok=True)
        file.path.write_text(file.content)
        done.append((file.path, outcome))
    return done


def init_project(directory: Path, *, force: bool = False) -> list[tuple[Path, str]]:
    """Write the project's files into `directory` (see `write_files`)."""
    return write_files(project_files(directory), force=force)
