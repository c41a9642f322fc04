terraform {
  # 1.11 brings write-only arguments: the secret values reach Secret Manager without being
  # stored in the Terraform state (see secrets.tf).
  required_version = ">= 1.11"

  required_providers {
    google = {
      source = "hashicorp/google"
      # The arguments used here were checked against the 6.50 schema; 7.x changed defaults.
      version = "~> 6.50"
    }
  }
}

provider "google" {
  # Credentials come from Application Default Credentials
  # (`gcloud auth application-default login`, or the CI's workload identity).
  project = var.project_id
  region  = var.region
}
