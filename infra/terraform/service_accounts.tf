# One service account per role, each with only what that role needs.

# What each function runs as: it reads its own secrets (secrets.tf) and nothing else; the
# database, storage and the cluster are reached with keys, not with Google IAM.
resource "google_service_account" "runtime" {
  for_each = local.functions

  account_id   = "${var.name_prefix}-${each.value.account}"
  display_name = "${each.value.name} (runtime)"
  description  = "Runs the ${each.value.name} function; reads its own secrets only."

  depends_on = [google_project_service.required]
}

# Cloud Build builds the functions as this account instead of the project's default one, which
# new projects no longer grant build permissions to.
resource "google_service_account" "builder" {
  account_id   = "${var.name_prefix}-builder"
  display_name = "LoRA runner functions (build)"
  description  = "Cloud Build identity for the function builds."

  depends_on = [google_project_service.required]
}

# The roles Google documents for a function's build service account: write the build logs,
# push the image to Artifact Registry, read the staged source from Cloud Storage.
resource "google_project_iam_member" "builder" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
    "roles/storage.objectAdmin",
  ])

  project = var.project_id
  role    = each.value
  member  = google_service_account.builder.member
}

# Cloud Scheduler signs its OIDC tokens as this account, the only one allowed to invoke the
# private processor (main.tf, invokers).
resource "google_service_account" "scheduler" {
  count = local.supabase_cron ? 0 : 1

  account_id   = "${var.name_prefix}-scheduler"
  display_name = "LoRA runner processor schedule"
  description  = "Identity of the Cloud Scheduler job that calls process-training-jobs."

  depends_on = [google_project_service.required]
}
