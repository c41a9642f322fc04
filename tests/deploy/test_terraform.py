"""infra/terraform, read as HCL: only arguments the Google provider has, described variables, a
complete example, and secrets that stay secrets.

`terraform validate` needs the provider, which cannot be downloaded here, so the resources and
arguments are checked against an allow-list taken from the google provider 6.50.0 schema (as
published in the generated @cdktf/provider-google 16.12.1 bindings, one per resource and block)
for exactly the resources this configuration uses. A typo'd or invented argument fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from infra.bundle import function_names

TERRAFORM = Path(__file__).resolve().parents[2] / "infra" / "terraform"
OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=True, strip_string_quotes=True)

# A name maps to None for an argument (or a block whose insides are not used here), to a dict
# for a block whose insides are checked too.
Schema = dict[str, "Schema | None"]


def args(names: str) -> Schema:
    return dict.fromkeys(names.split())


SCHEMA: dict[str, Schema] = {
    "google_project_service": args(
        "disable_dependent_services disable_on_destroy project service timeouts"
    ),
    "google_cloudfunctions2_function": {
        **args("description event_trigger kms_key_name labels location name project timeouts"),
        "build_config": {
            **args(
                "automatic_update_policy docker_repository entry_point environment_variables "
                "on_deploy_update_policy runtime service_account worker_pool"
            ),
            "source": {
                "storage_source": args("bucket generation object"),
                "repo_source": args(
                    "branch_name commit_sha dir invert_regex project_id repo_name tag_name"
                ),
            },
        },
        "service_config": {
            **args(
                "all_traffic_on_latest_revision available_cpu available_memory "
                "binary_authorization_policy environment_variables ingress_settings "
                "max_instance_count max_instance_request_concurrency min_instance_count "
                "secret_volumes service service_account_email timeout_seconds vpc_connector "
                "vpc_connector_egress_settings"
            ),
            "secret_environment_variables": args("key project_id secret version"),
        },
    },
    "google_cloud_run_service_iam_member": args("condition location member project role service"),
    "google_storage_bucket": args(
        "autoclass cors custom_placement_config default_event_based_hold "
        "enable_object_retention encryption force_destroy hierarchical_namespace ip_filter "
        "labels lifecycle_rule location logging name project public_access_prevention "
        "requester_pays retention_policy rpo soft_delete_policy storage_class timeouts "
        "uniform_bucket_level_access versioning website"
    ),
    "google_storage_bucket_object": args(
        "bucket cache_control content content_disposition content_encoding content_language "
        "content_type customer_encryption deletion_policy detect_md5hash event_based_hold "
        "force_empty_content_type kms_key_name metadata name retention source source_md5hash "
        "storage_class temporary_hold timeouts"
    ),
    "google_service_account": args(
        "account_id create_ignore_already_exists description disabled display_name project timeouts"
    ),
    "google_project_iam_member": args("condition member project role"),
    "google_secret_manager_secret": {
        **args(
            "annotations deletion_protection expire_time labels project rotation secret_id tags "
            "timeouts topics ttl version_aliases version_destroy_ttl"
        ),
        "replication": {"auto": args("customer_managed_encryption"), "user_managed": None},
    },
    "google_secret_manager_secret_version": args(
        "deletion_policy enabled is_secret_data_base64 secret secret_data secret_data_wo "
        "secret_data_wo_version timeouts"
    ),
    "google_secret_manager_secret_iam_member": args("condition member project role secret_id"),
    "google_cloud_scheduler_job": {
        **args(
            "app_engine_http_target attempt_deadline description name paused project "
            "pubsub_target region schedule time_zone timeouts"
        ),
        "retry_config": args(
            "max_backoff_duration max_doublings max_retry_duration min_backoff_duration retry_count"
        ),
        "http_target": {
            **args("body headers http_method oauth_token uri"),
            "oidc_token": args("audience service_account_email"),
        },
    },
}

# Terraform's own arguments, valid in every resource.
META_ARGUMENTS: Schema = {
    **args("count for_each depends_on provider"),
    "lifecycle": args(
        "create_before_destroy prevent_destroy ignore_changes replace_triggered_by "
        "precondition postcondition"
    ),
}
DYNAMIC_ARGUMENTS = {"for_each", "iterator", "labels", "content"}
PROVIDER_ARGUMENTS = {"project", "region"}


def load(path: Path) -> dict[str, Any]:
    with path.open() as file:
        return hcl2.load(file, serialization_options=OPTIONS)


def configuration() -> dict[str, list[Any]]:
    """Every top-level block of the .tf files, by kind (resource, variable, ...)."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind, blocks in load(path).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def labelled(kind: str) -> dict[str, Any]:
    """The blocks of one kind by label: {"project_id": {...}} for variables."""
    return {label: body for block in configuration().get(kind, []) for label, body in block.items()}


def resources() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (rtype, name, body)
        for block in configuration()["resource"]
        for rtype, named in block.items()
        for name, body in named.items()
    ]


def unknown_arguments(body: dict[str, Any], schema: Schema, path: str) -> list[str]:
    """The arguments and blocks of ``body`` that ``schema`` lacks, as dotted paths."""
    problems = []
    for key, value in body.items():
        if key == "__is_block__":
            continue
        if key == "dynamic":
            for dynamic in value:
                for label, spec in dynamic.items():
                    problems += [
                        f"{path}.dynamic.{label}.{extra}"
                        for extra in set(spec) - DYNAMIC_ARGUMENTS - {"__is_block__"}
                    ]
                    problems += unknown_arguments(
                        {label: spec["content"]}, schema, f"{path}.dynamic"
                    )
            continue
        if key not in schema:
            problems.append(f"{path}.{key}")
            continue
        nested = schema[key]
        is_block = isinstance(value, list) and all(
            isinstance(item, dict) and item.get("__is_block__") for item in value
        )
        if is_block and nested is not None:
            for item in value:
                problems += unknown_arguments(item, nested, f"{path}.{key}")
        elif is_block and value and any(set(item) - {"__is_block__"} for item in value):
            problems.append(f"{path}.{key} (a block whose arguments are not in the allow-list)")
    return problems


def test_every_resource_and_argument_is_in_the_provider_schema() -> None:
    """Each resource type, argument and nested block used exists in the google provider's
    schema, and Terraform's meta-arguments are the only additions."""
    problems = []
    for rtype, name, body in resources():
        if rtype not in SCHEMA:
            problems.append(f"{rtype} (resource type not in the allow-list)")
            continue
        problems += unknown_arguments(body, {**SCHEMA[rtype], **META_ARGUMENTS}, rtype + "." + name)
    for provider in configuration()["provider"]:
        extra = set(provider["google"]) - PROVIDER_ARGUMENTS - {"__is_block__"}
        problems += [f"provider.google.{key}" for key in sorted(extra)]
    assert problems == []


def test_the_allow_list_catches_a_misspelt_argument() -> None:
    """The checker itself: a wrong argument name in a nested block is reported by its path."""
    body = load_text(
        """
        resource "google_cloud_scheduler_job" "job" {
          http_target {
            uri = "https://example.com"
            oidc_token {
              service_acount_email = "x@example.com"
            }
          }
        }
        """
    )["resource"][0]["google_cloud_scheduler_job"]["job"]
    assert unknown_arguments(body, SCHEMA["google_cloud_scheduler_job"], "job") == [
        "job.http_target.oidc_token.service_acount_email"
    ]


def load_text(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=OPTIONS)


def test_every_variable_and_output_is_described() -> None:
    """Each variable has a type and a description, and each output a description, so
    variables.tf is the reference a user fills terraform.tfvars from."""
    for name, variable in labelled("variable").items():
        assert variable.get("description", "").strip(), name
        assert "type" in variable, name
    for name, output in labelled("output").items():
        assert output.get("description", "").strip(), name


def test_the_example_variables_file_sets_every_required_variable_and_no_unknown_one() -> None:
    """terraform.tfvars.example gives every variable without a default, and names only declared
    variables, so a copy of it is a complete and correctly spelt starting point."""
    variables = labelled("variable")
    required = {name for name, body in variables.items() if "default" not in body}
    example = set(load(TERRAFORM / "terraform.tfvars.example"))
    assert required <= example
    assert example <= set(variables)


def test_every_function_of_the_repository_is_deployed_with_its_entry_point() -> None:
    """The functions Terraform deploys are exactly the folders of functions/, each on the
    python312 runtime with the folder's name as entry point."""
    [functions_local] = [block for block in configuration()["locals"] if "functions" in block]
    assert sorted(functions_local["functions"]) == function_names()
    [(_, _, function)] = [r for r in resources() if r[0] == "google_cloudfunctions2_function"]
    build = function["build_config"][0]
    assert build["runtime"] == "python312"
    assert build["entry_point"] == "${each.key}"
    assert function["for_each"] == "${local.functions}"


def test_sensitive_variables_reach_the_functions_only_through_secret_manager() -> None:
    """A sensitive variable is referenced only in secrets.tf (and its own validation), never in
    a plain environment variable or anywhere else."""
    sensitive = [
        name for name, body in labelled("variable").items() if body.get("sensitive") is True
    ]
    assert {"supabase_service_role_key", "database_url", "cron_secret"} <= set(sensitive)
    for path in sorted(TERRAFORM.glob("*.tf")):
        if path.name in {"secrets.tf", "variables.tf"}:
            continue
        for name in sensitive:
            assert not re.search(rf"\bvar\.{name}\b", path.read_text()), (path.name, name)


@pytest.mark.parametrize("path", sorted(TERRAFORM.glob("*.tf")), ids=lambda path: path.name)
def test_terraform_files_parse(path: Path) -> None:
    """Each .tf file is valid HCL (the other checks read nothing from a file that fails)."""
    assert load(path)
