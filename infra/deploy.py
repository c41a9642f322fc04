"""`make deploy`: build the function bundles, then `terraform init` and `terraform apply`.

Before anything is built or sent, it checks what a deployment cannot do without, and stops with
a message saying what to do: terraform on PATH, the variables file, and a value for every
variable of infra/terraform/variables.tf that has no default (from the file or from a
``TF_VAR_<name>`` environment variable, as Terraform itself reads them). Google credentials are
the provider's business: Application Default Credentials, checked by Terraform.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from infra.bundle import DEFAULT_OUTPUT, REPO_ROOT, BundleError, build_bundle, function_names

TERRAFORM_DIR = REPO_ROOT / "infra" / "terraform"
DEFAULT_TFVARS = TERRAFORM_DIR / "terraform.tfvars"

_HCL_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


class DeployError(Exception):
    """The deployment cannot start; the message says what to do."""


def _load_hcl(path: Path) -> dict[str, Any]:
    try:
        with path.open() as file:
            return hcl2.load(file, serialization_options=_HCL_OPTIONS)
    # The parser's errors come from lark, whose classes are not part of python-hcl2's API.
    except Exception as exc:
        raise DeployError(f"{path} is not valid HCL: {exc}") from exc


def required_variables(terraform_dir: Path = TERRAFORM_DIR) -> list[str]:
    """The variables of the Terraform configuration that have no default."""
    names = []
    for path in sorted(terraform_dir.glob("*.tf")):
        for block in _load_hcl(path).get("variable", []):
            for label, body in block.items():
                if "default" not in body:
                    names.append(label.strip('"'))
    return sorted(names)


def given_variables(tfvars: Path, environ: Mapping[str, str]) -> set[str]:
    """The variables given a non-empty value, in ``tfvars`` or as ``TF_VAR_<name>``."""
    given = {
        name
        for name, value in _load_hcl(tfvars).items()
        if value is not None and value not in ("", "null")
    }
    given.update(
        name.removeprefix("TF_VAR_")
        for name, value in environ.items()
        if name.startswith("TF_VAR_") and value
    )
    return given


def check_prerequisites(
    tfvars: Path, environ: Mapping[str, str], terraform_dir: Path = TERRAFORM_DIR
) -> str:
    """Stop with what to do if the deployment cannot start; else the terraform executable."""
    terraform = shutil.which("terraform", path=environ.get("PATH", os.defpath))
    if terraform is None:
        raise DeployError(
            "terraform is not on PATH: install Terraform 1.11 or newer "
            "(https://developer.hashicorp.com/terraform/install) and run again"
        )
    if not tfvars.is_file():
        example = terraform_dir / "terraform.tfvars.example"
        raise DeployError(
            f"no variables file at {tfvars}: copy {example} there and fill it in, "
            "or point TFVARS=... at yours"
        )
    missing = sorted(set(required_variables(terraform_dir)) - given_variables(tfvars, environ))
    if missing:
        raise DeployError(
            f"{tfvars} lacks a value for: {', '.join(missing)} "
            "(see the descriptions in infra/terraform/variables.tf)"
        )
    return terraform


def deploy(
    tfvars: Path,
    *,
    environ: Mapping[str, str],
    bundle_dir: Path = DEFAULT_OUTPUT,
    terraform_dir: Path = TERRAFORM_DIR,
    auto_approve: bool = False,
) -> int:
    """Check, bundle, init, apply. Returns terraform's exit status."""
    terraform = check_prerequisites(tfvars, environ, terraform_dir)
    for name in function_names():
        bundle = build_bundle(name, bundle_dir)
        print(f"bundled {bundle.path} ({bundle.sha256[:12]})", flush=True)
    chdir = f"-chdir={terraform_dir}"
    init = subprocess.run(
        [terraform, chdir, "init", "-input=false"], env=dict(environ), check=False
    )
    if init.returncode != 0:
        return init.returncode
    apply = [
        terraform,
        chdir,
        "apply",
        f"-var-file={tfvars.resolve()}",
        # The bundles just built, wherever they were put: what is applied is what was checked.
        f"-var=bundle_dir={bundle_dir.resolve()}",
    ]
    if auto_approve:
        apply += ["-input=false", "-auto-approve"]
    return subprocess.run(apply, env=dict(environ), check=False).returncode


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy",
        description="Bundle the cloud functions and deploy them with Terraform.",
    )
    parser.add_argument(
        "--tfvars",
        type=Path,
        default=DEFAULT_TFVARS,
        help=f"Terraform variables file (default: {DEFAULT_TFVARS.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--bundle-dir",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to build the bundles (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--auto-approve", action="store_true", help="apply without asking for confirmation"
    )
    args = parser.parse_args(argv)
    try:
        return deploy(
            args.tfvars,
            environ=os.environ if environ is None else environ,
            bundle_dir=args.bundle_dir,
            auto_approve=args.auto_approve,
        )
    except (DeployError, BundleError) as exc:
        print(f"make deploy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
