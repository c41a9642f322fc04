-- The job API's operations (DESIGN section 8): get-job reads one job with its chart-ready metrics
-- series, dataset and costs; cancel-job cancels an active job. Both are SECURITY INVOKER: they run
-- as the signed-in caller, so the RLS policies, not the functions, decide what a caller sees and
-- may change.
--
-- Downsampling must cost about the same for a job with a million points as for one with a
-- thousand, so it cannot read every point: `lora_private.metrics_rollups` keeps, per job and for
-- a few fixed bucket widths of steps, each bucket's first step and its points of lowest and
-- highest training loss. A reader takes the widest rollup that still gives every share of the
-- range a row, merges its rows into those shares (fewer than 8 rows each, whatever the job's
-- length), then fetches the chosen points by primary key.
--
-- The rollups and helpers live in `lora_private`, a schema the Data API does not expose: they are
-- the implementation of get_job_detail, not an API of their own.

create schema if not exists lora_private;
comment on schema lora_private is
  'Internals of the LoRA runner''s SQL API; keep it out of the Data API''s exposed schemas.';
revoke all on schema lora_private from public;
grant usage on schema lora_private to authenticated, service_role;

-- === metric rollups =============================================================================

-- Bucket widths, in steps. A reader scans at most (next width / width) x buckets rollup rows, and
-- every inserted batch updates one row per width: eight keeps both small.
create function lora_private.metrics_rollup_widths() returns integer[]
language sql
immutable
set search_path = ''
as $$
  select array[16, 128, 1024, 8192, 65536]
$$;

-- A non-finite loss (a diverged run) is no point on a chart: JSON cannot carry it, and it would
-- win every max.
--
-- No `set search_path`, although splinter warns about it (function_search_path_mutable): a
-- function with any SET clause is never inlined, and this one runs for every point a rollup or a
-- response reads. Measured (bench.get_job, and the same database with and without the setting on
-- this function and metrics_point_json, alternating): get_job_detail with max_points=500 went
-- from about 15-20 ms to 85-120 ms (bench.get_job over HTTP: p50 12-25 ms to 60-85 ms), and
-- inserting points, whose rollup trigger calls it per point, became 4-10 times slower (1,000,000
-- points: 21 s to 124 s). It is SECURITY INVOKER, and every caller of it (the rollup triggers,
-- get_job_detail, metrics_point_json) runs with `search_path = ''`, under which its inlined body
-- is resolved; only a user calling it directly with a search path of their own could change what
-- it means, and only for their own query.
create function lora_private.finite_or_null(value double precision) returns double precision
language sql
immutable
as $$
  select case when value in ('NaN', 'Infinity', '-Infinity') then null else value end
$$;

-- A bucket's extremes are kept as pairs that order the way the reader wants them, so plain
-- min / max (and least / greatest when merging) pick them, ties going to the earlier step:
-- lowest = [loss, step], highest = [loss, -step]. Steps are integers, exact as doubles.
create table lora_private.metrics_rollups (
  job_id uuid not null references public.training_jobs (id) on delete cascade,
  width integer not null check (width > 0),
  -- Steps [bucket x width, (bucket + 1) x width).
  bucket integer not null check (bucket >= 0),
  first_step integer not null,
  lowest double precision[] check (cardinality(lowest) = 2),
  highest double precision[] check (cardinality(highest) = 2),
  primary key (job_id, width, bucket)
);

comment on table lora_private.metrics_rollups is
  'Per job and bucket of steps: the first step and the points of lowest ([loss, step]) and '
  'highest ([loss, -step]) training loss. Kept up to date from metrics_points by triggers; read '
  'by get_job_detail to downsample.';

-- New points widen their buckets' extremes. Statement-level, so a batched insert costs one upsert
-- per touched bucket and width, not one per point.
create function lora_private.metrics_rollups_add() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  insert into lora_private.metrics_rollups as r
    (job_id, width, bucket, first_step, lowest, highest)
  select p.job_id, w.width, p.step / w.width, min(p.step),
         min(array[p.loss, p.step]) filter (where p.loss is not null),
         max(array[p.loss, -p.step]) filter (where p.loss is not null)
  from (select n.job_id, n.step, lora_private.finite_or_null(n.training_loss) as loss
        from new_points n) p
  cross join unnest(lora_private.metrics_rollup_widths()) as w(width)
  group by p.job_id, w.width, p.step / w.width
  on conflict (job_id, width, bucket) do update set
    first_step = least(r.first_step, excluded.first_step),
    lowest = least(r.lowest, excluded.lowest),
    highest = greatest(r.highest, excluded.highest);
  return null;
end;
$$;

-- An extreme cannot be taken back incrementally: the buckets a changed or deleted point was in
-- are recomputed from the points left in them. The runner never changes or deletes single points
-- (a deleted job takes its rollups with it); this keeps the rollups true when someone does.
create function lora_private.metrics_rollups_rebuild() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  create temp table touched_rollups on commit drop as
    select distinct o.job_id, w.width, o.step / w.width as bucket
    from old_points o
    cross join unnest(lora_private.metrics_rollup_widths()) as w(width);

  delete from lora_private.metrics_rollups r
  using touched_rollups t
  where r.job_id = t.job_id and r.width = t.width and r.bucket = t.bucket;

  insert into lora_private.metrics_rollups (job_id, width, bucket, first_step, lowest, highest)
  select t.job_id, t.width, t.bucket, min(p.step),
         min(array[p.loss, p.step]) filter (where p.loss is not null),
         max(array[p.loss, -p.step]) filter (where p.loss is not null)
  from touched_rollups t
  join (select m.job_id, m.step, lora_private.finite_or_null(m.training_loss) as loss
        from public.metrics_points m) p
    on p.job_id = t.job_id
   and p.step >= t.bucket * t.width and p.step < (t.bucket + 1) * t.width
  group by t.job_id, t.width, t.bucket;

  drop table touched_rollups;
  return null;
end;
$$;

create trigger metrics_points_rollups_add
  after insert on public.metrics_points
  referencing new table as new_points
  for each statement execute function lora_private.metrics_rollups_add();

-- An update may move a point to another bucket: the buckets its old version was in are rebuilt,
-- and its new version is added to its own (adding a point a rebuild already saw changes nothing).
create trigger metrics_points_rollups_update_add
  after update on public.metrics_points
  referencing new table as new_points
  for each statement execute function lora_private.metrics_rollups_add();

create trigger metrics_points_rollups_update_rebuild
  after update on public.metrics_points
  referencing old table as old_points
  for each statement execute function lora_private.metrics_rollups_rebuild();

create trigger metrics_points_rollups_delete
  after delete on public.metrics_points
  referencing old table as old_points
  for each statement execute function lora_private.metrics_rollups_rebuild();

-- Points stored before this migration.
insert into lora_private.metrics_rollups (job_id, width, bucket, first_step, lowest, highest)
select p.job_id, w.width, p.step / w.width, min(p.step),
       min(array[p.loss, p.step]) filter (where p.loss is not null),
       max(array[p.loss, -p.step]) filter (where p.loss is not null)
from (select m.job_id, m.step, lora_private.finite_or_null(m.training_loss) as loss
      from public.metrics_points m) p
cross join unnest(lora_private.metrics_rollup_widths()) as w(width)
group by p.job_id, w.width, p.step / w.width;

grant select on lora_private.metrics_rollups to authenticated;
grant all on lora_private.metrics_rollups to service_role;

alter table lora_private.metrics_rollups enable row level security;

create policy "Metric rollups are viewable by the owner of their job"
  on lora_private.metrics_rollups for select to authenticated
  using (
    job_id in (select j.id from public.training_jobs j where j.user_id = (select auth.uid()))
  );

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

-- === get-job ====================================================================================

-- One job with its dataset, costs and metrics series: all of it when there are at most
-- p_max_points points after p_since_step (all points when NULL), otherwise at most p_max_points
-- of them that keep the curve's shape: the first and the last, and in each of
-- (p_max_points - 2) / 2 equal step ranges the points of lowest and highest training loss (the
-- range's first point when it has no loss). PT404 when the job does not exist or is not the
-- caller's: RLS hides both alike.
create function public.get_job_detail(
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

  select * into job from public.training_jobs j where j.id = p_job_id;
  if not found then
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

-- === cancel-job =================================================================================

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
  returning j.* into job;
  if found then
    return lora_private.training_job_json(job);
  end if;

  select * into job from public.training_jobs j where j.id = p_job_id;
  if not found then
    raise exception 'No such training job, or it is not yours.' using errcode = 'PT404';
  end if;
  raise exception 'This training job is already %; it can no longer be cancelled.', job.status
    using errcode = 'PT409';
end;
$$;

-- === grants =====================================================================================

-- Trigger functions need no grant: they run for whoever writes the points, checked when the
-- trigger was created.
revoke execute on function
  lora_private.metrics_rollup_widths(),
  lora_private.finite_or_null(double precision),
  lora_private.metrics_rollups_add(),
  lora_private.metrics_rollups_rebuild(),
  lora_private.training_job_json(public.training_jobs),
  lora_private.metrics_point_json(public.metrics_points),
  public.get_job_detail(uuid, integer, integer),
  public.cancel_training_job(uuid)
from public, anon;

grant execute on function
  lora_private.metrics_rollup_widths(),
  lora_private.finite_or_null(double precision),
  lora_private.training_job_json(public.training_jobs),
  lora_private.metrics_point_json(public.metrics_points),
  public.get_job_detail(uuid, integer, integer),
  public.cancel_training_job(uuid)
to authenticated, service_role;
