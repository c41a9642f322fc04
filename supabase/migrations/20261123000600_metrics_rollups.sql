-- Metric rollups: what lets get-job downsample a job's series in about the same time for a
-- million points as for a thousand, without reading every point (docs/architecture.md, "The HTTP
-- API"). `lora_private.metrics_rollups` keeps, per job and for a few fixed bucket widths of
-- steps, each bucket's first step and its points of lowest and highest training loss, kept up to
-- date by triggers on metrics_points. A reader takes the widest rollup that still gives every
-- share of the range a row, merges its rows into those shares (fewer than 8 rows each, whatever
-- the job's length), then fetches the chosen points by primary key.
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

-- Trigger functions need no grant: they run for whoever writes the points, checked when the
-- trigger was created.
revoke execute on function
  lora_private.metrics_rollup_widths(),
  lora_private.finite_or_null(double precision),
  lora_private.metrics_rollups_add(),
  lora_private.metrics_rollups_rebuild()
from public, anon;

grant execute on function
  lora_private.metrics_rollup_widths(),
  lora_private.finite_or_null(double precision)
to authenticated, service_role;
