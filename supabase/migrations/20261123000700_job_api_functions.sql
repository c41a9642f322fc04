-- The job API's operations (docs/architecture.md, "The HTTP API"): get-job reads one job with its
-- chart-ready metrics series, dataset and costs; cancel-job cancels an active job. They are
-- SECURITY INVOKER: they run as the signed-in caller, so the RLS policies and column grants, not
-- the functions, decide what a caller sees and may change. They read a job through
-- lora_private.visible_training_job (the column-privileges migration), never the whole row.
--
-- Every parameter is given by the caller (no defaults): get-job's default max_points stays in
-- get-job, and its bounds in get_job_detail (PT400, answered as 400 with the message).

-- === the API's view of a job ====================================================================

-- What a job's owner sees of it: everything but the processor's bookkeeping (leases, attempts,
-- idempotency key, poll schedule, cancel delivery). Listed, not subtracted, so that a column
-- added for the processor does not show up in the API by itself. The processor's verdicts on a
-- running job (`stalled_since`, `lost_contact_since`) are shown: the monitor warns from them
-- instead of judging a stall or an outage itself.
create function lora_private.training_job_json(job public.training_jobs) returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', job.id,
    'user_id', job.user_id,
    'dataset_id', job.dataset_id,
    'status', job.status,
    'progress', job.progress,
    'current_epoch', job.current_epoch,
    'total_epochs', job.total_epochs,
    'current_step', job.current_step,
    'total_steps', job.total_steps,
    'current_metrics', job.current_metrics,
    'hyperparameters', job.hyperparameters,
    'gpu_config', job.gpu_config,
    'estimated_total_cost', job.estimated_total_cost,
    'current_cost', job.current_cost,
    'final_cost', job.final_cost,
    'external_job_id', job.external_job_id,
    'error_message', job.error_message,
    'artifact_location', job.artifact_location,
    'estimated_completion_at', job.estimated_completion_at,
    'started_at', job.started_at,
    'completed_at', job.completed_at,
    'run_started_at', job.run_started_at,
    'run_ended_at', job.run_ended_at,
    'last_progress_at', job.last_progress_at,
    'stalled_since', job.stalled_since,
    'lost_contact_since', job.lost_contact_since,
    'status_message', job.status_message,
    'cancel_requested_at', job.cancel_requested_at,
    'created_at', job.created_at,
    'updated_at', job.updated_at
  )
$$;

-- One point of a response. Inlined like finite_or_null, and for the same measured reason left
-- without `set search_path` (see there); the one name in it that is not built in is
-- schema-qualified.
create function lora_private.metrics_point_json(point public.metrics_points) returns jsonb
language sql
stable
as $$
  select jsonb_build_object(
    'step', point.step,
    'epoch', point.epoch,
    'training_loss', lora_private.finite_or_null(point.training_loss),
    'validation_loss', lora_private.finite_or_null(point.validation_loss),
    'learning_rate', lora_private.finite_or_null(point.learning_rate),
    'throughput', lora_private.finite_or_null(point.throughput),
    'gpu_utilization', lora_private.finite_or_null(point.gpu_utilization),
    'gpu_memory', lora_private.finite_or_null(point.gpu_memory),
    'recorded_at', point.recorded_at
  )
$$;

-- === get-job and cancel-job ===================================================================

-- The job as its owner sees it.
create function public.get_training_job(p_job_id uuid) returns jsonb
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

-- One job with its dataset, costs and metrics series: all of it when there are at most
-- p_max_points points after p_since_step (all points when NULL), otherwise at most p_max_points
-- of them that keep the curve's shape: the first and the last, and in each of
-- (p_max_points - 2) / 2 equal step ranges the points of lowest and highest training loss (the
-- range's first point when it has no loss). PT404 when the job does not exist or is not the
-- caller's: RLS hides both alike.
create function public.get_job_detail(
  p_job_id uuid,
  p_max_points integer,
  p_since_step integer
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
  -- The one place max_points is bounded: get-job passes the caller's value through.
  if p_max_points is null or p_max_points not between 2 and 5000 then
    raise exception 'max_points must be a whole number from 2 to 5000.'
      using errcode = 'PT400';
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

-- Cancels the caller's active job and returns it as get_job_detail shows it. The state machine
-- trigger stops the running cost and writes the final cost, the cost record and the notification;
-- the processor delivers the cancel to the cluster unless cancel-job manages to first. PT404 when
-- the job does not exist or is not the caller's; PT409, naming the status, when it has already
-- ended, including when it ended while this call waited for its row.
create function public.cancel_training_job(p_job_id uuid) returns jsonb
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

-- === grants =====================================================================================

revoke execute on function
  lora_private.training_job_json(public.training_jobs),
  lora_private.metrics_point_json(public.metrics_points),
  public.get_training_job(uuid),
  public.get_job_detail(uuid, integer, integer),
  public.cancel_training_job(uuid)
from public, anon;

grant execute on function
  lora_private.training_job_json(public.training_jobs),
  lora_private.metrics_point_json(public.metrics_points),
  public.get_training_job(uuid),
  public.get_job_detail(uuid, integer, integer),
  public.cancel_training_job(uuid)
to authenticated, service_role;
