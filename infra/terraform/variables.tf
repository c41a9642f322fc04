# Inputs of the deployment. Copy terraform.tfvars.example to terraform.tfvars and fill it in;
# `make deploy` refuses to start while a variable without a default is missing from it.

# --- Google Cloud ---------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project ID to deploy into (billing enabled)."
  type        = string
}

variable "region" {
  description = "Region of the functions, the scheduler job and the source bucket, e.g. europe-west1. Pick the one nearest your Supabase project."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of the service accounts, secrets and source bucket this deployment creates, so two deployments can share a project."
  type        = string
  default     = "lora-runner"

  validation {
    # Service account IDs are at most 30 characters; the longest suffix is "-cancel-job".
    condition     = can(regex("^[a-z][a-z0-9-]{0,17}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix: 2 to 19 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "bundle_dir" {
  description = "Folder holding the function bundles built by `make bundle` (<function>.zip). Null means build/bundles of this repository."
  type        = string
  default     = null
}

# --- Supabase -------------------------------------------------------------------------------

variable "supabase_url" {
  description = "Supabase project URL, https://<project-ref>.supabase.co (Settings > API)."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.supabase_url))
    error_message = "supabase_url must start with https://."
  }
}

variable "supabase_service_role_key" {
  description = "Supabase service-role (or secret) key. Used by the processor; stored in Secret Manager."
  type        = string
  sensitive   = true
}

variable "supabase_anon_key" {
  description = "Supabase anon (or publishable) key, sent as `apikey` with a user's JWT. Stored in Secret Manager."
  type        = string
  sensitive   = true
}

variable "supabase_jwt_secret" {
  description = "Legacy HS256 JWT secret of the Supabase project, if its users' tokens are still signed with it. Null when the project signs with asymmetric keys (verified through its JWKS, found from supabase_url). Stored in Secret Manager."
  type        = string
  sensitive   = true
  default     = null

  validation {
    condition     = var.supabase_jwt_secret == null || try(length(var.supabase_jwt_secret) >= 32, false)
    error_message = "supabase_jwt_secret is Supabase's JWT secret, 32 characters or more."
  }
}

variable "database_url" {
  description = "Optional direct PostgreSQL URL (Supabase's connection pooler, with the password). When set, the functions use it instead of the REST API. Stored in Secret Manager."
  type        = string
  sensitive   = true
  default     = null
}

# --- GPU cluster ----------------------------------------------------------------------------

variable "gpu_cluster_api_url" {
  description = "Base URL of the GPU cluster's training API (POST /training/submit, ...)."
  type        = string
}

variable "gpu_cluster_api_key" {
  description = "Bearer key of the GPU cluster's API. Stored in Secret Manager."
  type        = string
  sensitive   = true
}

# --- Dataset storage ------------------------------------------------------------------------

variable "storage_backend" {
  description = "Where datasets are stored: \"supabase\" (Supabase Storage, default) or \"s3\" (any S3-compatible store; set the s3_* variables)."
  type        = string
  default     = "supabase"

  validation {
    condition     = contains(["supabase", "s3"], var.storage_backend)
    error_message = "storage_backend must be \"supabase\" or \"s3\"."
  }
}

variable "s3_endpoint_url" {
  description = "S3 endpoint when storage_backend is \"s3\" (e.g. Supabase's <url>/storage/v1/s3); null for AWS S3."
  type        = string
  default     = null
}

variable "s3_region" {
  description = "S3 region when storage_backend is \"s3\"."
  type        = string
  default     = "us-east-1"
}

variable "s3_access_key_id" {
  description = "S3 access key ID when storage_backend is \"s3\"."
  type        = string
  default     = null

  validation {
    condition     = var.storage_backend != "s3" || var.s3_access_key_id != null
    error_message = "storage_backend = \"s3\" needs s3_access_key_id."
  }
}

variable "s3_secret_access_key" {
  description = "S3 secret access key when storage_backend is \"s3\". Stored in Secret Manager."
  type        = string
  sensitive   = true
  default     = null

  validation {
    condition     = var.storage_backend != "s3" || var.s3_secret_access_key != null
    error_message = "storage_backend = \"s3\" needs s3_secret_access_key."
  }
}

# --- HTTP API -------------------------------------------------------------------------------

variable "allowed_origins" {
  description = "Origins (scheme://host[:port]) whose pages may call get-job and cancel-job from the browser, e.g. [\"https://app.example.com\"]; [] for none, [\"*\"] for any."
  type        = list(string)
}

# --- Processor schedule ---------------------------------------------------------------------

variable "processor_trigger" {
  description = "What calls process-training-jobs: \"cloud_scheduler\" (every minute with an OIDC token; the function is private) or \"supabase_cron\" (every 30 s from pg_cron with the cron secret; the function is public at the platform and checks the secret). See supabase/cron/."
  type        = string
  default     = "cloud_scheduler"

  validation {
    condition     = contains(["cloud_scheduler", "supabase_cron"], var.processor_trigger)
    error_message = "processor_trigger must be \"cloud_scheduler\" or \"supabase_cron\"."
  }
}

variable "processor_schedule" {
  description = "Cron schedule of the Cloud Scheduler job (processor_trigger = \"cloud_scheduler\"); one minute is its shortest period."
  type        = string
  default     = "* * * * *"
}

variable "cron_secret" {
  description = "Shared bearer secret that Supabase Cron sends to the processor (processor_trigger = \"supabase_cron\"); store the same value in Supabase Vault. Stored in Secret Manager."
  type        = string
  sensitive   = true
  default     = null

  validation {
    condition     = var.processor_trigger != "supabase_cron" || try(length(var.cron_secret) >= 32, false)
    error_message = "processor_trigger = \"supabase_cron\" needs a cron_secret of at least 32 characters (e.g. `openssl rand -hex 32`)."
  }
}

variable "processor_timeout_seconds" {
  description = "Request timeout of process-training-jobs. Keep it above PROCESSOR_TIME_BUDGET_SECONDS (45 by default)."
  type        = number
  default     = 60
}

variable "processor_max_instances" {
  description = "Most concurrent instances of process-training-jobs. Overlapping cycles are safe; a few cover a slow cycle."
  type        = number
  default     = 3
}

variable "api_max_instances" {
  description = "Most concurrent instances of get-job and of cancel-job each."
  type        = number
  default     = 20
}

variable "extra_environment_variables" {
  description = "Further plain (non-secret) settings for all three functions, e.g. { PROCESSOR_CLAIM_BATCH_SIZE = \"50\", DB_POOL_MAX_SIZE = \"5\" }. See README's Configuration."
  type        = map(string)
  default     = {}
}
