# The function sources: one zip per function, built by `make bundle` (infra/bundle.py).

resource "google_storage_bucket" "sources" {
  name                        = "${var.project_id}-${var.name_prefix}-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # It holds nothing but rebuildable bundles.
  force_destroy = true

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket_object" "bundle" {
  for_each = local.functions

  # The bundles are reproducible, so the hash changes exactly when the content does: an
  # unchanged function is not redeployed, and a rollback re-uploads the same name as before.
  name   = "${each.value.name}/${filesha256("${local.bundle_dir}/${each.key}.zip")}.zip"
  bucket = google_storage_bucket.sources.name
  source = "${local.bundle_dir}/${each.key}.zip"
}
