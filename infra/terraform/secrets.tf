# Every credential lives in Secret Manager and reaches a function as a secret environment
# variable; a function can read only the secrets it is given.

locals {
  # With a DATABASE_URL the functions reach the database directly; without one, through
  # PostgREST, which the database settings only accept with both Supabase keys.
  uses_rest_api = nonsensitive(var.database_url == null)

  secret_values = {
    "supabase-service-role-key" = var.supabase_service_role_key
    "supabase-anon-key"         = var.supabase_anon_key
    "supabase-jwt-secret"       = var.supabase_jwt_secret
    "database-url"              = var.database_url
    "gpu-cluster-api-key"       = var.gpu_cluster_api_key
    "cron-secret"               = local.supabase_cron ? var.cron_secret : null
    "s3-secret-access-key"      = var.storage_backend == "s3" ? var.s3_secret_access_key : null
  }

  secret_environment_names = {
    "supabase-service-role-key" = "SUPABASE_SERVICE_ROLE_KEY"
    "supabase-anon-key"         = "SUPABASE_ANON_KEY"
    "supabase-jwt-secret"       = "SUPABASE_JWT_SECRET"
    "database-url"              = "DATABASE_URL"
    "gpu-cluster-api-key"       = "GPU_CLUSTER_API_KEY"
    "cron-secret"               = "CRON_SECRET"
    "s3-secret-access-key"      = "S3_SECRET_ACCESS_KEY"
  }

  # Which secrets exist is no secret, only their values are: nonsensitive() lets the names key
  # the resources below. A secret no function reads is not created.
  secret_names = toset([
    for name, value in local.secret_values : name
    if nonsensitive(value != null) && contains(flatten(values(local.functions)[*].secrets), name)
  ])

  # (function, secret) pairs: each runtime account may read the secrets of its function.
  secret_readers = merge([
    for function, spec in local.functions : {
      for name in spec.secrets : "${function}/${name}" => {
        function = function
        secret   = name
      } if contains(local.secret_names, name)
    }
  ]...)
}

resource "google_secret_manager_secret" "secret" {
  for_each = local.secret_names

  secret_id = "${var.name_prefix}-${each.value}"

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_version" "secret" {
  for_each = local.secret_names

  secret = google_secret_manager_secret.secret[each.value].id
  # Write-only: the value goes to Secret Manager and is never stored in the Terraform state.
  secret_data_wo = local.secret_values[each.value]
  # Terraform cannot compare a write-only value with the last one, so the version number is
  # derived from the value's hash: a changed value makes a new secret version, an unchanged one
  # nothing.
  secret_data_wo_version = parseint(substr(sha256(local.secret_values[each.value]), 0, 12), 16)

  lifecycle {
    # The functions move to the new version before the old one is destroyed.
    create_before_destroy = true
  }
}

resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each = local.secret_readers

  project   = var.project_id
  secret_id = google_secret_manager_secret.secret[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.value.function].member
}
