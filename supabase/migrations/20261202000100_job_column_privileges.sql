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
  last_progress_at, stalled_since, lost_contact_since, cancel_requested_at,
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
         j.last_progress_at, j.stalled_since, j.lost_contact_since, j.cancel_requested_at,
         j.created_at, j.updated_at
  into job.id, job.user_id, job.dataset_id, job.status,
       job.progress, job.current_epoch, job.total_epochs, job.current_step, job.total_steps,
       job.current_metrics, job.hyperparameters, job.gpu_config,
       job.estimated_total_cost, job.current_cost, job.final_cost,
       job.external_job_id, job.error_message, job.artifact_location,
       job.estimated_completion_at, job.started_at, job.completed_at, job.run_started_at,
       job.run_ended_at,
       job.last_progress_at, job.stalled_since, job.lost_contact_since, job.cancel_requested_at,
       job.created_at, job.updated_at
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

-- === the functions that read whole rows as their caller =========================================

-- Each is the function of its earlier migration with its whole-row reads replaced; what it
-- returns is unchanged.

-- The job as its owner sees it (migration 400 returned the whole row, bookkeeping included).
create or replace function public.get_training_job(p_job_id uuid) returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  job public.training_jobs := lora_private.visible_training_job(p_job_id);
begin
  if job.id is null then
    return null;
  end if;
  return lora_private.training_job_json(job);
end;
$$;

comment on function public.get_training_job(uuid) is
  'The job as JSON, as its owner sees it (no processor bookkeeping), or NULL when it does not '
  'exist or is not the caller''s.';

-- get-job's one job with dataset, metrics and costs (migration 600, `select *` replaced).
create or replace function public.get_job_detail(
  p_job_id uuid,
  p_max_points integer default 500,
  p_since_step integer default null
) returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  job public.training_jobs;
  -- bigint: p_since_step may be the largest integer.
  from_step bigint := coalesce(p_since_step::bigint + 1, 0);
  n_buckets integer := (p_max_points - 2) / 2;
  first_point integer;
  last_point integer;
  rollup_width integer;
  grid_start bigint;
  span bigint;
  chosen integer[];
  metrics jsonb;
begin
  if p_max_points is null or p_max_points not between 2 and 5000 then
    raise exception 'max_points must be between 2 and 5000, not %', p_max_points
      using errcode = '22023';
  end if;

  job := lora_private.visible_training_job(p_job_id);
  if job.id is null then
    raise exception 'No such training job, or it is not yours.' using errcode = 'PT404';
  end if;

  -- Counting stops at p_max_points + 1: a long series costs no more to size than a short one.
  if (select count(*) from (select from public.metrics_points m
                            where m.job_id = p_job_id and m.step >= from_step
                            limit p_max_points + 1) s) <= p_max_points then
    select coalesce(jsonb_agg(lora_private.metrics_point_json(m) order by m.step), '[]'::jsonb)
    into metrics
    from public.metrics_points m
    where m.job_id = p_job_id and m.step >= from_step;
  else
    select m.step into first_point from public.metrics_points m
    where m.job_id = p_job_id and m.step >= from_step order by m.step limit 1;
    select m.step into last_point from public.metrics_points m
    where m.job_id = p_job_id order by m.step desc limit 1;

    if n_buckets = 0 then
      chosen := array[first_point, last_point];
    else
      -- The widest rollup with at least one row per bucket; raw points (width 1) when the
      -- range is too short for any. Either way fewer than 8 rows per bucket are read.
      select coalesce(max(w), 1) into rollup_width
      from unnest(lora_private.metrics_rollup_widths()) as w
      where w::bigint * n_buckets <= last_point - first_point + 1;
      -- n_buckets equal shares of the steps from the first point's rollup boundary to the
      -- last point; a rollup row goes wholly to the share its first step is in.
      grid_start := (first_point / rollup_width)::bigint * rollup_width;
      span := last_point - grid_start + 1;

      with units as (
        -- Rollup rows wholly at or after from_step.
        select r.bucket::bigint * r.width as start, r.first_step, r.lowest, r.highest
        from lora_private.metrics_rollups r
        where r.job_id = p_job_id and r.width = rollup_width
          and r.bucket::bigint * r.width >= from_step
        union all
        -- Raw points: all of them at width 1, else those of the rollup bucket that from_step
        -- cuts in two.
        select p.step, p.step,
               case when p.loss is not null then array[p.loss, p.step] end,
               case when p.loss is not null then array[p.loss, -p.step] end
        from (select m.step, lora_private.finite_or_null(m.training_loss) as loss
              from public.metrics_points m
              where m.job_id = p_job_id and m.step >= from_step
                and (rollup_width = 1
                     or m.step < (from_step + rollup_width - 1) / rollup_width * rollup_width)
             ) p
      ),
      per_bucket as (
        select min(u.first_step) as first_step, min(u.lowest) as lowest,
               max(u.highest) as highest
        from units u
        group by (u.start - grid_start) * n_buckets / span
      )
      select array_agg(distinct s.step) into chosen
      from (
        select b.lowest[2]::integer as step from per_bucket b where b.lowest is not null
        union all
        select -b.highest[2]::integer from per_bucket b where b.highest is not null
        union all
        select b.first_step from per_bucket b where b.lowest is null
        union all
        select first_point
        union all
        select last_point
      ) s;
    end if;

    select coalesce(jsonb_agg(lora_private.metrics_point_json(m) order by m.step), '[]'::jsonb)
    into metrics
    from public.metrics_points m
    where m.job_id = p_job_id and m.step = any(chosen);
  end if;

  return jsonb_build_object(
    'job', lora_private.training_job_json(job),
    'dataset', (
      select jsonb_build_object(
        'id', d.id,
        'name', d.name,
        'description', d.description,
        'storage_bucket', d.storage_bucket,
        'storage_path', d.storage_path,
        'file_size_bytes', d.file_size_bytes,
        'training_ready', d.training_ready,
        'total_training_pairs', d.total_training_pairs,
        'created_at', d.created_at,
        'updated_at', d.updated_at)
      from public.datasets d where d.id = job.dataset_id),
    'metrics', metrics,
    'costs', (
      select coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'cost_type', c.cost_type,
        'amount', c.amount,
        'currency', c.currency,
        'billing_period', c.billing_period,
        'details', c.details,
        'created_at', c.created_at) order by c.created_at, c.id), '[]'::jsonb)
      from public.cost_records c where c.job_id = p_job_id)
  );
end;
$$;

-- cancel-job's cancel (migration 600, `returning j.*` and `select *` replaced).
create or replace function public.cancel_training_job(p_job_id uuid) returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  job public.training_jobs;
begin
  -- Guarded by status, so a job finished concurrently (this update then waits for its row and
  -- re-reads it) is left alone instead of raising the state machine's error.
  update public.training_jobs j
  set status = 'cancelled'
  where j.id = p_job_id and j.status in ('queued', 'initializing', 'running')
  returning j.id into job.id;
  -- Read back as the caller may see it: the state machine trigger has filled in the rest.
  if found then
    return lora_private.training_job_json(lora_private.visible_training_job(p_job_id));
  end if;

  job := lora_private.visible_training_job(p_job_id);
  if job.id is null then
    raise exception 'No such training job, or it is not yours.' using errcode = 'PT404';
  end if;
  raise exception 'This training job is already %; it can no longer be cancelled.', job.status
    using errcode = 'PT409';
end;
$$;
