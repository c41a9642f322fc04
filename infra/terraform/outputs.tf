output "process_training_jobs_url" {
  description = "URL of process-training-jobs. Under Supabase Cron, store it in Vault as processor_url (supabase/cron/)."
  value       = google_cloudfunctions2_function.function["process_training_jobs"].service_config[0].uri
}

output "get_job_url" {
  description = "URL of get-job, for the frontend: GET <url>/<job_id> with the user's JWT."
  value       = google_cloudfunctions2_function.function["get_job"].service_config[0].uri
}

output "cancel_job_url" {
  description = "URL of cancel-job, for the frontend: POST <url>/<job_id> with the user's JWT."
  value       = google_cloudfunctions2_function.function["cancel_job"].service_config[0].uri
}

output "processor_trigger" {
  description = "What calls the processor: the Cloud Scheduler job's name, or a reminder to schedule Supabase Cron."
  value       = local.supabase_cron ? "supabase_cron: run supabase/cron/schedule_processor.sql in the Supabase project" : google_cloud_scheduler_job.processor[0].name
}
