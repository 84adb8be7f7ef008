"""`supasaasy init`: the files a project needs to run SupaSaaSy on its own Supabase.

    supasaasy.toml                       the apps, schedules and worker settings
    .env.example                         every variable the functions read
    functions/<name>/main.py             each function, deployable alone (with
    functions/<name>/requirements.txt    this exact version of the package)
    supabase/migrations/<version>_*.sql  the schema, for `supabase db push`

`supasaasy new-connector NAME`: an installable package of a third-party connector on
the connector kit (see `connector_files`).

An existing file is never overwritten unless `force`; one with the same content is
left as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from string import Template

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


# A connector's name: its apps' `connector`, its collections' prefix, its package's suffix.
CONNECTOR_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
# Template -> where it goes in the package (`$package`: the import name).
CONNECTOR_TEMPLATES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/$package/__init__.py",
    "connector.py.tmpl": "src/$package/connector.py",
    "fake.py.tmpl": "src/$package/fake.py",
    "views.sql.tmpl": "src/$package/sql/${view_version}_${name}_views.sql",
    "test_conformance.py.tmpl": "tests/test_conformance.py",
}


def connector_files(name: str, directory: Path) -> list[ScaffoldFile]:
    """The package `new-connector` writes into `directory`: a `pyproject.toml` declaring
    the `supasaasy.connectors` entry point, a connector on the kit with one resource
    (`<name>_item`) and its typed view, a fake of its provider, and tests running the
    conformance suite over it. ScaffoldError for a name that is not a lower-case
    identifier or is taken by a connector already installed."""
    from .connectors import known_connectors

    if not CONNECTOR_NAME.match(name):
        raise ScaffoldError(
            f"connector name {name!r}: use 2 to 40 lower-case letters, digits and _, "
            "starting with a letter"
        )
    if name in known_connectors():
        raise ScaffoldError(f"connector name {name!r} is taken by an installed connector")
    latest = max(m.version for m in package_migrations())
    words = name.split("_")
    values = {
        "name": name,
        "NAME": name.upper(),
        "Name": "".join(w.capitalize() for w in words),
        "display": " ".join(w.capitalize() for w in words),
        "package": f"supasaasy_{name}",
        "dist": f"supasaasy-{name.replace('_', '-')}",
        "supasaasy_version": metadata.version("supasaasy"),
        # After every migration of the package, so that it applies after them.
        "view_version": max(datetime.now(UTC).strftime("%Y%m%d%H%M%S"), str(int(latest) + 1)),
    }
    folder = resources.files("supasaasy").joinpath("project", "connector")
    return [
        ScaffoldFile(
            directory / Template(target).substitute(values),
            Template(folder.joinpath(source).read_text()).substitute(values),
        )
        for source, target in CONNECTOR_TEMPLATES.items()
    ]


def new_connector(name: str, directory: Path, *, force: bool = False) -> list[tuple[Path, str]]:
    """Write the package of a new connector into `directory` (see `write_files`)."""
    return write_files(connector_files(name, directory), force=force)
