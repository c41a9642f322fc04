# The three Cloud Functions (gen2), what each one is given, and who may call it.

locals {
  bundle_dir    = coalesce(var.bundle_dir, "${path.module}/../../build/bundles")
  supabase_cron = var.processor_trigger == "supabase_cron"

  # Settings that are no secret; everything else reaches the functions through Secret Manager.
  common_environment = merge(var.extra_environment_variables, {
    SUPABASE_URL = var.supabase_url
    # Cloud Functions sets this on every 2nd-gen function (log lines carry the execution id);
    # declaring it keeps each plan from trying to remove it.
    LOG_EXECUTION_ID = "true"
  })

  # Storage: the processor signs dataset downloads and artifact uploads, get-job adapter downloads.
  storage_environment = merge(
    { STORAGE_BACKEND = var.storage_backend },
    var.storage_backend == "s3" ? {
      S3_REGION        = var.s3_region
      S3_ACCESS_KEY_ID = var.s3_access_key_id
    } : {},
    var.storage_backend == "s3" && var.s3_endpoint_url != null ? {
      S3_ENDPOINT_URL = var.s3_endpoint_url
    } : {},
  )
  storage_secrets = var.storage_backend == "s3" ? ["s3-secret-access-key"] : ["supabase-service-role-key"]

  processor_environment = merge(
    local.common_environment,
    local.storage_environment,
    {
      GPU_CLUSTER_API_URL = var.gpu_cluster_api_url
      # Behind Cloud Scheduler the platform checks the OIDC token and lets nothing else in.
      PROCESSOR_TRUST_PLATFORM_AUTH = local.supabase_cron ? "false" : "true"
    },
  )

  api_environment = merge(local.common_environment, {
    ALLOWED_ORIGINS = join(",", var.allowed_origins)
  })

  # Keyed by the folder under functions/, which is also the entry point's name.
  functions = {
    process_training_jobs = {
      name            = "process-training-jobs"
      account         = "processor"
      description     = "One processor cycle per call: claims, submits, polls and finalizes training jobs."
      timeout_seconds = var.processor_timeout_seconds
      max_instances   = var.processor_max_instances
      environment     = local.processor_environment
      secrets = distinct(concat(
        ["gpu-cluster-api-key", "database-url", "cron-secret"],
        local.uses_rest_api ? ["supabase-service-role-key", "supabase-anon-key"] : [],
        local.storage_secrets,
      ))
    }
    get_job = {
      name            = "get-job"
      account         = "get-job"
      description     = "One training job with its dataset, metrics and costs, for its owner."
      timeout_seconds = 30
      max_instances   = var.api_max_instances
      # It signs the adapter download URLs of completed jobs.
      environment = merge(local.api_environment, local.storage_environment)
      secrets = distinct(concat(
        ["database-url", "supabase-jwt-secret"],
        local.uses_rest_api ? ["supabase-service-role-key", "supabase-anon-key"] : [],
        local.storage_secrets,
      ))
    }
    cancel_job = {
      name            = "cancel-job"
      account         = "cancel-job"
      description     = "Cancels the caller's active training job, at the cluster and in the database."
      timeout_seconds = 30
      max_instances   = var.api_max_instances
      # It tells the cluster at once; the processor retries when the cluster is slow.
      environment = merge(local.api_environment, {
        GPU_CLUSTER_API_URL = var.gpu_cluster_api_url
      })
      secrets = concat(
        ["database-url", "supabase-jwt-secret", "gpu-cluster-api-key"],
        local.uses_rest_api ? ["supabase-service-role-key", "supabase-anon-key"] : [],
      )
    }
  }

  # Who may invoke each function at the platform. The processor is private behind Cloud
  # Scheduler; pg_net cannot mint Google tokens, so under Supabase Cron the platform lets every
  # call through and the function checks the cron secret. get-job and cancel-job check the
  # user's JWT in code.
  invokers = merge(
    {
      "get_job/allUsers"    = { function = "get_job", member = "allUsers" }
      "cancel_job/allUsers" = { function = "cancel_job", member = "allUsers" }
    },
    local.supabase_cron ? {
      "process_training_jobs/allUsers" = { function = "process_training_jobs", member = "allUsers" }
      } : {
      "process_training_jobs/scheduler" = {
        function = "process_training_jobs"
        member   = google_service_account.scheduler[0].member
      }
    },
  )
}

resource "google_project_service" "required" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  service = each.value
  # Other workloads of the project may use these APIs too: never turn them off on destroy.
  disable_on_destroy = false
}

resource "google_cloudfunctions2_function" "function" {
  for_each = local.functions

  name        = each.value.name
  location    = var.region
  description = each.value.description

  build_config {
    runtime         = "python312"
    entry_point     = each.key
    service_account = google_service_account.builder.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        # Named by its content hash: a new bundle is a new object, hence a new deployment.
        object = google_storage_bucket_object.bundle[each.key].name
      }
    }
  }

  service_config {
    available_memory               = "512Mi"
    timeout_seconds                = each.value.timeout_seconds
    min_instance_count             = 0
    max_instance_count             = each.value.max_instances
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime[each.key].email
    environment_variables          = each.value.environment

    dynamic "secret_environment_variables" {
      for_each = [for name in each.value.secrets : name if contains(local.secret_names, name)]
      iterator = secret

      content {
        key        = local.secret_environment_names[secret.value]
        project_id = var.project_id
        secret     = google_secret_manager_secret.secret[secret.value].secret_id
        # A pinned version, not "latest": a changed secret redeploys the function, so no
        # instance keeps running with the old value.
        version = google_secret_manager_secret_version.secret[secret.value].version
      }
    }
  }

  depends_on = [
    google_project_service.required,
    google_project_iam_member.builder,
    google_secret_manager_secret_iam_member.runtime,
  ]
}

resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = local.invokers

  project  = var.project_id
  location = var.region
  # A gen2 function runs as the Cloud Run service of the same name.
  service = google_cloudfunctions2_function.function[each.value.function].name
  role    = "roles/run.invoker"
  member  = each.value.member
}
