"""infra/bundle.py: what goes into a function's zip, and which pins its requirements.txt gets."""

from __future__ import annotations

import importlib.metadata
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from infra import bundle
from infra.bundle import BundleError, build_bundle, function_names

REPO = bundle.REPO_ROOT


def versions(*distributions: str) -> list[str]:
    """Exact pins of installed distributions, so the metadata the bundler reads is there."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in distributions]


def make_repo(
    root: Path, files: dict[str, str], dependencies: list[str], package_data: str = ""
) -> Path:
    """A miniature repository: a pyproject.toml and the given files, for one function `fn`."""
    root.mkdir(parents=True)
    pins = ", ".join(f'"{pin}"' for pin in dependencies)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "x"\nversion = "0"\ndependencies = [{pins}]\n'
        f'[project.optional-dependencies]\ndev = ["pytest==9.2.0"]\n{package_data}'
    )
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def requirement_names(built: bundle.Bundle) -> list[str]:
    return [Requirement(line).name for line in built.requirements]


@pytest.mark.parametrize("name", function_names())
def test_bundle_holds_the_function_the_shared_package_and_requirements(
    name: str, tmp_path: Path
) -> None:
    """A bundle is main.py at its root, every module of shared/, and requirements.txt: nothing
    else, no bytecode."""
    built = build_bundle(name, tmp_path)
    with zipfile.ZipFile(built.path) as archive:
        names = archive.namelist()
    shared = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "shared").rglob("*.py")
        if "__pycache__" not in path.parts
    )
    assert "main.py" in names
    assert "requirements.txt" in names
    assert [n for n in names if n.startswith("shared/")] == shared
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


@pytest.mark.parametrize("name", function_names())
def test_requirements_are_exact_runtime_pins_from_pyproject(name: str, tmp_path: Path) -> None:
    """requirements.txt lists only pyproject's runtime pins, verbatim: never a dev dependency,
    never a version range, and always functions-framework, which main.py imports."""
    built = build_bundle(name, tmp_path)
    with zipfile.ZipFile(built.path) as archive:
        lines = archive.read("requirements.txt").decode().splitlines()
    pinned = {str(requirement) for requirement in bundle.pinned_dependencies().values()}
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == list(built.requirements)
    assert set(requirements) <= pinned
    assert "functions-framework" in requirement_names(built)
    assert not {"pytest", "ruff", "mypy", "moto"} & set(requirement_names(built))


@pytest.mark.parametrize(
    ("name", "needs", "never"),
    [
        # get-job signs adapter downloads, so it carries the storage clients, but no retries
        # or async HTTP for the cluster.
        (
            "get_job",
            {"pyjwt", "psycopg", "postgrest", "boto3", "storage3"},
            {"tenacity", "aiohttp"},
        ),
        ("cancel_job", {"pyjwt", "tenacity", "aiohttp"}, {"boto3", "storage3"}),
        ("process_training_jobs", {"boto3", "storage3", "tenacity", "aiohttp"}, {"pyjwt"}),
    ],
)
def test_each_function_installs_only_what_it_uses(
    name: str, needs: set[str], never: set[str], tmp_path: Path
) -> None:
    """A function's bundle carries the dependencies of the wiring it imports and no other's:
    get-job installs no retry or async HTTP library, the processor no JWT library, and no
    bundle carries torch or the trainer."""
    names = set(requirement_names(build_bundle(name, tmp_path)))
    assert needs <= names
    assert not never & names
    assert not {"torch", "transformers", "peft", "ray"} & names


def test_bundles_are_reproducible(tmp_path: Path) -> None:
    """Building twice gives identical bytes (sorted entries, fixed timestamps), so the content
    hash that names the uploaded object changes only when the content does."""
    for name in function_names():
        first = build_bundle(name, tmp_path / "first")
        second = build_bundle(name, tmp_path / "second")
        assert first.path.read_bytes() == second.path.read_bytes()
        assert first.sha256 == second.sha256
        with zipfile.ZipFile(first.path) as archive:
            infos = archive.infolist()
        assert [info.filename for info in infos] == sorted(info.filename for info in infos)
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_changed_content_changes_the_hash(tmp_path: Path) -> None:
    """One changed byte in a bundled module gives the bundle a new hash."""
    files = {"functions/fn/main.py": "import functions_framework\n", "shared/__init__.py": ""}
    repo = make_repo(tmp_path / "repo", files, versions("functions-framework"))
    before = build_bundle("fn", tmp_path / "out", repo)
    (repo / "shared" / "__init__.py").write_text("# changed\n")
    after = build_bundle("fn", tmp_path / "out", repo)
    assert before.sha256 != after.sha256


def test_requirements_follow_the_imports_that_main_reaches(tmp_path: Path) -> None:
    """Only distributions imported on main.py's import paths are required: imports inside
    functions count, imports under TYPE_CHECKING and modules main.py never reaches do not, and
    flask comes with functions-framework instead of being pinned."""
    files = {
        "functions/fn/main.py": """
            import functions_framework
            from flask import Request
            from shared.web import fetch
        """,
        "shared/__init__.py": "",
        "shared/web.py": """
            from typing import TYPE_CHECKING
            from . import text

            if TYPE_CHECKING:
                import boto3

            def fetch():
                import httpx
                return httpx
        """,
        "shared/text.py": "import json\n",
        "shared/unused.py": "import tenacity\n",
    }
    repo = make_repo(
        tmp_path / "repo",
        files,
        versions("functions-framework", "httpx", "boto3", "tenacity"),
    )
    built = build_bundle("fn", tmp_path / "out", repo)
    assert requirement_names(built) == ["functions-framework", "httpx"]
    with zipfile.ZipFile(built.path) as archive:
        # The whole package ships, reached or not: only the requirements are trimmed.
        assert "shared/unused.py" in archive.namelist()


def test_a_module_of_an_unpinned_dependency_takes_the_pin_that_brings_it(
    tmp_path: Path,
) -> None:
    """Importing botocore, which only boto3 brings in, requires boto3."""
    files = {"functions/fn/main.py": "import functions_framework\nimport botocore.config\n"}
    repo = make_repo(tmp_path / "repo", files, versions("functions-framework", "boto3"))
    built = build_bundle("fn", tmp_path / "out", repo)
    assert requirement_names(built) == ["boto3", "functions-framework"]


def test_package_data_declared_in_pyproject_is_bundled(tmp_path: Path) -> None:
    """Data files that pyproject declares for the shared package travel with it."""
    files = {
        "functions/fn/main.py": "import functions_framework\n",
        "shared/__init__.py": "",
        "shared/sql/queries.sql": "select 1;\n",
        "shared/notes.txt": "not package data\n",
    }
    repo = make_repo(
        tmp_path / "repo",
        files,
        versions("functions-framework"),
        '[tool.setuptools.package-data]\nshared = ["sql/*.sql"]\n',
    )
    with zipfile.ZipFile(build_bundle("fn", tmp_path / "out", repo).path) as archive:
        names = archive.namelist()
    assert "shared/sql/queries.sql" in names
    assert "shared/notes.txt" not in names


def test_an_import_nothing_provides_is_refused(tmp_path: Path) -> None:
    """A module that no installed distribution provides stops the build, naming the module."""
    files = {"functions/fn/main.py": "import functions_framework\nimport no_such_module_xyz\n"}
    repo = make_repo(tmp_path / "repo", files, versions("functions-framework"))
    with pytest.raises(BundleError, match="no_such_module_xyz"):
        build_bundle("fn", tmp_path / "out", repo)


def test_an_import_no_pin_brings_is_refused(tmp_path: Path) -> None:
    """An installed module that no runtime pin brings in (here a dev tool) stops the build
    rather than shipping a function that fails to import in the cloud."""
    files = {"functions/fn/main.py": "import functions_framework\nimport pytest\n"}
    repo = make_repo(tmp_path / "repo", files, versions("functions-framework"))
    with pytest.raises(BundleError, match="pytest"):
        build_bundle("fn", tmp_path / "out", repo)


def test_a_range_instead_of_a_pin_is_refused(tmp_path: Path) -> None:
    """A runtime dependency without an exact version stops the build."""
    files = {"functions/fn/main.py": "import functions_framework\n"}
    repo = make_repo(tmp_path / "repo", files, ["functions-framework>=3"])
    with pytest.raises(BundleError, match="not an exact pin"):
        build_bundle("fn", tmp_path / "out", repo)


def test_a_function_file_that_shadows_the_bundle_is_refused(tmp_path: Path) -> None:
    """A requirements.txt of the function's own would silently replace the generated one."""
    files = {
        "functions/fn/main.py": "import functions_framework\n",
        "functions/fn/requirements.txt": "flask\n",
    }
    repo = make_repo(tmp_path / "repo", files, versions("functions-framework"))
    with pytest.raises(BundleError, match=r"requirements\.txt"):
        build_bundle("fn", tmp_path / "out", repo)


def test_command_line_builds_every_function_or_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m infra.bundle` builds a zip per function and prints its hash; an unknown
    function name exits 1 with a message instead of a traceback."""
    assert bundle.main(["--output", str(tmp_path)]) == 0
    assert sorted(path.stem for path in tmp_path.glob("*.zip")) == function_names()
    assert str(tmp_path) in capsys.readouterr().out
    assert bundle.main(["--output", str(tmp_path), "no_such_function"]) == 1
    assert "no function 'no_such_function'" in capsys.readouterr().err
