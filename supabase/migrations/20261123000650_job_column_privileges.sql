-- Column privileges on training_jobs: a signed-in user reads the columns that describe their job,
-- never the processor's bookkeeping, whatever they call: the Data API (PostgREST's
-- /rest/v1/training_jobs), or any function running as them.
--
-- User-facing (granted): what the job API shows, lora_private.training_job_json: the job, its
-- dataset, progress, metrics, hyperparameters and GPU, its costs, the cluster's id for its run and
-- the trained adapter's location, its times (the run's own start and end at the cluster
-- included), the processor's verdicts the monitor warns from (`stalled_since`,
-- `lost_contact_since`), when the step counter last moved and when a cancel was requested (the
-- user's own act).
--
-- Bookkeeping (not granted): `idempotency_key` (what resubmits the same run), `attempts`,
-- `lease_owner` and `lease_expires_at` (which processor invocation owns the job), `next_poll_at`
-- (the poll schedule) and `cancel_delivered_at` (whether the cluster has been told), and any
-- column added later until it is granted here: a new column is the processor's until someone
-- decides otherwise.
--
-- A user's query that names a bookkeeping column, or reads the whole row (`select *`,
-- `to_jsonb(j)`, `returning *`), is refused with 42501; a Data API client lists the columns it
-- wants. The job API's functions run as their caller, so they read the row through
-- lora_private.visible_training_job below, which names only granted columns.

revoke select on public.training_jobs from authenticated, anon;

grant select (
  id, user_id, dataset_id, status,
  progress, current_epoch, total_epochs, current_step, total_steps, current_metrics,
  hyperparameters, gpu_config,
  estimated_total_cost, current_cost, final_cost,
  external_job_id, error_message, artifact_location,
  estimated_completion_at, started_at, completed_at, run_started_at, run_ended_at,
  last_progress_at, stalled_since, lost_contact_since, status_message, cancel_requested_at,
  created_at, updated_at
) on public.training_jobs to authenticated;

-- === the job as its caller may read it ==========================================================

-- The job as a training_jobs row with its user-facing columns filled in and the bookkeeping left
-- NULL, read as the caller (SECURITY INVOKER: RLS and the column grants apply); a row of NULLs
-- when the job does not exist or is not the caller's. Keep its column list equal to the grant
-- above (a pgTAP test compares them).
create function lora_private.visible_training_job(p_job_id uuid) returns public.training_jobs
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  job public.training_jobs;
begin
  select j.id, j.user_id, j.dataset_id, j.status,
         j.progress, j.current_epoch, j.total_epochs, j.current_step, j.total_steps,
         j.current_metrics, j.hyperparameters, j.gpu_config,
         j.estimated_total_cost, j.current_cost, j.final_cost,
         j.external_job_id, j.error_message, j.artifact_location,
         j.estimated_completion_at, j.started_at, j.completed_at, j.run_started_at, j.run_ended_at,
         j.last_progress_at, j.stalled_since, j.lost_contact_since, j.status_message,
         j.cancel_requested_at, j.created_at, j.updated_at
  into job.id, job.user_id, job.dataset_id, job.status,
       job.progress, job.current_epoch, job.total_epochs, job.current_step, job.total_steps,
       job.current_metrics, job.hyperparameters, job.gpu_config,
       job.estimated_total_cost, job.current_cost, job.final_cost,
       job.external_job_id, job.error_message, job.artifact_location,
       job.estimated_completion_at, job.started_at, job.completed_at, job.run_started_at,
       job.run_ended_at,
       job.last_progress_at, job.stalled_since, job.lost_contact_since, job.status_message,
       job.cancel_requested_at, job.created_at, job.updated_at
  from public.training_jobs j
  where j.id = p_job_id;
  return job;
end;
$$;

comment on function lora_private.visible_training_job(uuid) is
  'The job''s user-facing columns as a training_jobs row (bookkeeping NULL), under the caller''s '
  'RLS and column grants; all NULL when the caller cannot see it.';

revoke execute on function lora_private.visible_training_job(uuid) from public, anon;
grant execute on function lora_private.visible_training_job(uuid) to authenticated, service_role;
