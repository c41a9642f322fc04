"""`make deploy` (infra/deploy.py): what it refuses to start without, and what it runs.

Terraform is replaced by a script on PATH that records its arguments: the real apply needs a
Google Cloud project.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from infra import deploy
from infra.bundle import function_names

REQUIRED = {
    "project_id": '"my-project"',
    "supabase_url": '"https://abc.supabase.co"',
    "supabase_service_role_key": '"service-role"',
    "supabase_anon_key": '"anon"',
    "gpu_cluster_api_url": '"https://gpu.example.com"',
    "gpu_cluster_api_key": '"gpu-key"',
    "allowed_origins": '["https://app.example.com"]',
}


@pytest.fixture
def fake_terraform(tmp_path: Path) -> Path:
    """A `terraform` that appends its arguments to a log and fails `init` when told to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "terraform"
    script.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$*" >> "$FAKE_TERRAFORM_LOG"\n'
        'if [ "$2" = "$FAKE_TERRAFORM_FAIL" ]; then exit 3; fi\n'
    )
    script.chmod(0o755)
    return bin_dir


def environ(tmp_path: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "FAKE_TERRAFORM_LOG": str(tmp_path / "terraform.log"),
        **extra,
    }


def write_tfvars(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name} = {value}\n" for name, value in values.items()))
    return path


def terraform_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "terraform.log"
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def run(tmp_path: Path, env: dict[str, str], tfvars: Path, *flags: str) -> int:
    return deploy.main(
        ["--tfvars", str(tfvars), "--bundle-dir", str(tmp_path / "bundles"), *flags], env
    )


def test_required_variables_are_those_without_a_default() -> None:
    """The check follows variables.tf: its variables without a default are the required ones."""
    assert set(deploy.required_variables()) == set(REQUIRED)


def test_deploy_bundles_then_inits_and_applies_with_the_variables_file(
    tmp_path: Path, fake_terraform: Path
) -> None:
    """With everything in place, every function is bundled, then `terraform init` and
    `terraform apply` run in infra/terraform with the variables file and those bundles."""
    tfvars = write_tfvars(tmp_path / "prod.tfvars", REQUIRED)
    assert run(tmp_path, environ(tmp_path, fake_terraform), tfvars) == 0
    bundles = tmp_path / "bundles"
    assert sorted(path.stem for path in bundles.glob("*.zip")) == function_names()
    chdir = f"-chdir={deploy.TERRAFORM_DIR}"
    assert terraform_calls(tmp_path) == [
        [chdir, "init", "-input=false"],
        [chdir, "apply", f"-var-file={tfvars.resolve()}", f"-var=bundle_dir={bundles.resolve()}"],
    ]


def test_auto_approve_applies_without_a_prompt(tmp_path: Path, fake_terraform: Path) -> None:
    """--auto-approve (make deploy AUTO_APPROVE=1) passes -auto-approve and never waits for
    input."""
    tfvars = write_tfvars(tmp_path / "t.tfvars", REQUIRED)
    assert run(tmp_path, environ(tmp_path, fake_terraform), tfvars, "--auto-approve") == 0
    apply = terraform_calls(tmp_path)[-1]
    assert apply[-2:] == ["-input=false", "-auto-approve"]


def test_a_failed_init_stops_before_apply(tmp_path: Path, fake_terraform: Path) -> None:
    """terraform's exit status is the command's, and nothing is applied after a failed init."""
    tfvars = write_tfvars(tmp_path / "t.tfvars", REQUIRED)
    env = environ(tmp_path, fake_terraform, FAKE_TERRAFORM_FAIL="init")
    assert run(tmp_path, env, tfvars) == 3
    assert [call[1] for call in terraform_calls(tmp_path)] == ["init"]


def test_refuses_without_terraform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without terraform on PATH it stops before building anything and says how to get it."""
    tfvars = write_tfvars(tmp_path / "t.tfvars", REQUIRED)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(tmp_path, environ(tmp_path, empty), tfvars) == 1
    assert "terraform is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "bundles").exists()


def test_refuses_without_the_variables_file(
    tmp_path: Path, fake_terraform: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing variables file stops it with the example to copy."""
    assert run(tmp_path, environ(tmp_path, fake_terraform), tmp_path / "absent.tfvars") == 1
    err = capsys.readouterr().err
    assert "absent.tfvars" in err
    assert "terraform.tfvars.example" in err
    assert terraform_calls(tmp_path) == []


def test_refuses_naming_each_missing_variable(
    tmp_path: Path, fake_terraform: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Variables absent or empty in the file, and not given as TF_VAR_<name>, are named; one
    given in the environment is not."""
    values = {**REQUIRED, "project_id": '""'}
    del values["gpu_cluster_api_key"]
    del values["supabase_anon_key"]
    tfvars = write_tfvars(tmp_path / "t.tfvars", values)
    env = environ(tmp_path, fake_terraform, TF_VAR_supabase_anon_key="from-env")
    assert run(tmp_path, env, tfvars) == 1
    err = capsys.readouterr().err
    assert "lacks a value for: gpu_cluster_api_key, project_id " in err
    assert terraform_calls(tmp_path) == []


def test_refuses_a_variables_file_that_is_not_hcl(
    tmp_path: Path, fake_terraform: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed variables file is reported as such, not as a traceback."""
    tfvars = tmp_path / "t.tfvars"
    tfvars.write_text('project_id = "unterminated\n')
    assert run(tmp_path, environ(tmp_path, fake_terraform), tfvars) == 1
    assert "is not valid HCL" in capsys.readouterr().err
