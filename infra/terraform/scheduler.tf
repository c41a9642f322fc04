# Cloud Scheduler calls the processor every minute with an OIDC token for its service account.
# For a 30-second cadence, set processor_trigger = "supabase_cron" and use supabase/cron/.

resource "google_cloud_scheduler_job" "processor" {
  count = local.supabase_cron ? 0 : 1

  name        = "${var.name_prefix}-process-training-jobs"
  description = "Runs one cycle of process-training-jobs."
  region      = var.region
  schedule    = var.processor_schedule
  time_zone   = "Etc/UTC"
  # A cycle stops taking work at its time budget; give it the function's whole timeout.
  attempt_deadline = "${var.processor_timeout_seconds + 30}s"

  retry_config {
    # The next tick is the retry: cycles are idempotent and a missed one loses nothing.
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.function["process_training_jobs"].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.scheduler[0].email
      audience              = google_cloudfunctions2_function.function["process_training_jobs"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.invoker]
}
