"""Self-contained deployment zips of the cloud functions: ``python -m infra.bundle``.

A bundle is everything Cloud Functions needs and nothing that points back into this repository:
the function's own files (``main.py`` at the root), the ``shared`` package as setuptools would
install it, and a ``requirements.txt`` holding the exact pins from ``pyproject.toml`` of only the
distributions that the function's code can import. Which those are is derived, not declared:
the imports reachable from ``main.py`` through the bundled modules are followed (imports under
``if TYPE_CHECKING:`` never run and are skipped), and each third-party module is traced to the
pinned dependency that brings it in. So a new ``import`` in ``shared`` updates every bundle that
reaches it, and a function that never touches boto3 does not install it.

The zips are reproducible: sorted entries, fixed timestamps and permissions, no compression. So
their hash, which names the uploaded object (infra/terraform), changes only when the content does.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import os
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "build" / "bundles"
SHARED_PACKAGE = "shared"
ENTRY_MODULE = "main.py"
REQUIREMENTS = "requirements.txt"

# The earliest time a zip entry can hold; any fixed value makes the archive reproducible.
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_REGULAR_FILE_0644 = 0o100644 << 16
_UNIX = 3


class BundleError(Exception):
    """The bundle cannot be built as asked."""


@dataclass(frozen=True)
class Bundle:
    """A built bundle: where it is, the hash of its bytes, and what it installs."""

    name: str
    path: Path
    sha256: str
    requirements: tuple[str, ...]


def function_names(repo: Path = REPO_ROOT) -> list[str]:
    """Every function of the repository: the folders of ``functions/`` that hold a ``main.py``."""
    return sorted(path.parent.name for path in (repo / "functions").glob(f"*/{ENTRY_MODULE}"))


def source_files(name: str, repo: Path = REPO_ROOT) -> dict[str, Path]:
    """The files of function ``name``'s bundle, by their path inside the zip."""
    function_dir = repo / "functions" / name
    if not (function_dir / ENTRY_MODULE).is_file():
        raise BundleError(f"no function {name!r}: {function_dir / ENTRY_MODULE} does not exist")
    files = {
        path.relative_to(function_dir).as_posix(): path
        for path in _plain_files(function_dir)
        # Bytecode and dotfiles are local leftovers, not sources.
        if path.suffix != ".pyc" and not path.name.startswith(".")
    }
    clashes = sorted(
        archive_name
        for archive_name in files
        if archive_name == REQUIREMENTS or archive_name.startswith(f"{SHARED_PACKAGE}/")
    )
    if clashes:
        raise BundleError(
            f"functions/{name} holds {', '.join(clashes)}, which the bundle itself provides"
        )
    files.update(_shared_package_files(repo))
    return files


def _plain_files(root: Path) -> Iterator[Path]:
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        for filename in filenames:
            path = Path(directory, filename)
            if path.is_file():
                yield path


def _shared_package_files(repo: Path) -> dict[str, Path]:
    """The package's modules plus the data files pyproject declares for it: what a wheel holds."""
    package_dir = repo / SHARED_PACKAGE
    patterns = ["**/*.py", *_package_data_patterns(repo)]
    return {
        path.relative_to(repo).as_posix(): path
        for pattern in patterns
        for path in package_dir.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


def _package_data_patterns(repo: Path) -> list[str]:
    setuptools = _pyproject(repo).get("tool", {}).get("setuptools", {})
    patterns: list[str] = setuptools.get("package-data", {}).get(SHARED_PACKAGE, [])
    return patterns


def _pyproject(repo: Path) -> dict[str, Any]:
    with (repo / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def pinned_dependencies(repo: Path = REPO_ROOT) -> dict[NormalizedName, Requirement]:
    """The runtime dependencies of pyproject.toml (never the dev extras), each an exact pin."""
    project = _pyproject(repo).get("project", {})
    pins: dict[NormalizedName, Requirement] = {}
    for text in project.get("dependencies", []):
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise BundleError(
                f"pyproject.toml: {text!r} is not an exact pin (name==version): a bundle must "
                "install what the tests ran with"
            )
        pins[canonicalize_name(requirement.name)] = requirement
    return pins


def third_party_imports(files: Mapping[str, Path]) -> set[str]:
    """Top-level names of the modules outside the bundle and the standard library that the
    bundle's code imports when ``main.py`` is loaded, following its imports through the bundle.
    """
    modules: dict[str, Path] = {}
    for archive_name, path in files.items():
        name = _module_name(archive_name)
        if name is not None:
            modules[name] = path
    found: set[str] = set()
    seen: set[str] = set()
    pending = ["main"]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = modules[module]
        is_package = path.name == "__init__.py"
        for imported in _imports(path, module, is_package=is_package):
            top = imported.partition(".")[0]
            if top in modules:
                # Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c, in that order.
                parts = imported.split(".")
                pending.extend(
                    prefix
                    for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                    if prefix in modules
                )
            elif top not in sys.stdlib_module_names:
                found.add(top)
    return found


def _module_name(archive_name: str) -> str | None:
    if not archive_name.endswith(".py"):
        return None
    parts = archive_name.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or None


def _imports(path: Path, module: str, *, is_package: bool) -> Iterator[str]:
    """The absolute names each import statement of ``path`` may load, at any depth but the
    bodies of ``if TYPE_CHECKING:``. ``from a import b`` yields both ``a`` and ``a.b``: ``b`` may
    be a submodule, and a name that is not one simply matches no file."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package, path)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            # The `else:` branch does run.
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(name: str | None, level: int, package: str, path: Path) -> str:
    if level == 0:
        assert name is not None  # noqa: S101 - `from import x` is not Python
        return name
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or (level - 1 == len(parts) and not name):
        raise BundleError(f"{path}: a relative import climbs out of the bundle")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, name] if name else base)


def requirements_for(
    imports: Iterable[str], pins: Mapping[NormalizedName, Requirement]
) -> list[Requirement]:
    """The pins that provide ``imports``, sorted by name.

    A module of a pinned distribution takes its pin. A module of a distribution that only comes
    in through another (flask through functions-framework) takes nothing new when a pin already
    chosen brings it, else the one pin that does; two candidates is an error, not a guess.
    """
    providers = importlib.metadata.packages_distributions()
    direct: dict[NormalizedName, Requirement] = {}
    indirect: dict[NormalizedName, str] = {}
    for top in sorted(imports):
        distributions = providers.get(top)
        if not distributions:
            raise BundleError(
                f"the bundled code imports {top!r}, which no installed distribution provides: "
                "run `make install`, or add it to pyproject.toml's dependencies"
            )
        for distribution in map(canonicalize_name, distributions):
            if distribution in pins:
                direct[distribution] = pins[distribution]
            else:
                indirect[distribution] = top
    chosen = dict(direct)
    closures = {name: _closure(requirement) for name, requirement in pins.items()}
    for distribution, top in sorted(indirect.items()):
        if any(distribution in closures[name] for name in chosen):
            continue
        candidates = sorted(name for name in pins if distribution in closures[name])
        if len(candidates) != 1:
            why = "no pinned dependency" if not candidates else " and ".join(candidates)
            raise BundleError(
                f"the bundled code imports {top!r} from {distribution}, which {why} brings in: "
                f"pin {distribution} in pyproject.toml's dependencies"
            )
        chosen[candidates[0]] = pins[candidates[0]]
    return [chosen[name] for name in sorted(chosen)]


def _closure(requirement: Requirement) -> set[NormalizedName]:
    """The installed distributions ``requirement`` pulls in, itself included, extras honoured."""
    found: set[NormalizedName] = set()
    pending = [requirement]
    while pending:
        current = pending.pop()
        name = canonicalize_name(current.name)
        if name in found:
            continue
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            # Not installed here: a dependency for another platform or Python version.
            continue
        found.add(name)
        extras = {"", *current.extras}
        for text in requires:
            dependency = Requirement(text)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(dependency)
    return found


def requirements_text(requirements: Sequence[Requirement]) -> str:
    lines = [
        "# Generated by infra/bundle.py from the pins in pyproject.toml: the distributions that",
        "# this function's code imports, directly or through the shared package.",
        *(str(requirement) for requirement in requirements),
    ]
    return "\n".join(lines) + "\n"


def write_zip(entries: Mapping[str, bytes], path: Path) -> None:
    """Write ``entries`` to ``path`` reproducibly: sorted, fixed timestamps and permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
            # Stored, not deflated: compressed bytes depend on the zlib build, and the bundle's
            # hash must depend on nothing but its content. The sources are small.
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = _REGULAR_FILE_0644
            info.create_system = _UNIX
            archive.writestr(info, entries[name])
    # A reader never sees a half-written bundle under the final name.
    partial.replace(path)


def build_bundle(name: str, output_dir: Path = DEFAULT_OUTPUT, repo: Path = REPO_ROOT) -> Bundle:
    """Build ``<output_dir>/<name>.zip`` for function ``name``."""
    files = source_files(name, repo)
    try:
        imports = third_party_imports(files)
    except SyntaxError as exc:
        raise BundleError(f"{exc.filename}:{exc.lineno}: {exc.msg}") from exc
    requirements = requirements_for(imports, pinned_dependencies(repo))
    entries = {archive_name: path.read_bytes() for archive_name, path in files.items()}
    entries[REQUIREMENTS] = requirements_text(requirements).encode()
    path = output_dir / f"{name}.zip"
    write_zip(entries, path)
    return Bundle(
        name=name,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        requirements=tuple(str(requirement) for requirement in requirements),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bundle", description="Build the cloud functions' deployment zips."
    )
    parser.add_argument(
        "functions", nargs="*", metavar="NAME", help="functions to bundle (default: all)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"folder for the zips (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    names = args.functions or function_names()
    if not names:
        print("error: no functions/*/main.py to bundle", file=sys.stderr)
        return 1
    try:
        bundles = [build_bundle(name, args.output) for name in names]
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for bundle in bundles:
        print(f"{bundle.sha256}  {bundle.path}  ({', '.join(bundle.requirements)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
