-- Many users, few GPUs (docs/architecture.md, "Fair queueing"): per-user limits on active jobs,
-- a capacity per GPU type, round-robin claiming across users, and a queued job's place in line.
--
-- Active means initializing or running: a job holds its slot from the moment it is claimed until
-- it ends.

-- --- limits as data ------------------------------------------------------------------------------

-- A user's own limit on active jobs (a plan or tier); users without a row get the processor's
-- default (PROCESSOR_MAX_ACTIVE_JOBS_PER_USER).
create table public.user_job_limits (
  user_id uuid primary key references auth.users (id) on delete cascade,
  max_active_jobs integer not null check (max_active_jobs between 0 and 1000),
  plan text check (plan is null or length(plan) between 1 and 64),
  updated_at timestamptz not null default now()
);

comment on table public.user_job_limits is
  'Per-user limit on active (initializing + running) training jobs; absent: the default.';

alter table public.user_job_limits enable row level security;
grant select on public.user_job_limits to authenticated;
grant all on public.user_job_limits to service_role;

create policy "Users can read their own job limit"
  on public.user_job_limits for select to authenticated
  using (user_id = (select auth.uid()));

-- How many jobs of a GPU type may be active at once: the cluster's size, as data. NULL: no limit.
alter table public.gpu_prices
  add column max_active_jobs integer check (max_active_jobs > 0);

comment on column public.gpu_prices.max_active_jobs is
  'How many jobs on this GPU type may be active at once (the GPUs there are); NULL: no limit.';

-- Each user's queue in order, and the active jobs counted against the limits.
create index training_jobs_user_queue_idx on public.training_jobs (user_id, created_at)
  where status = 'queued';
create index training_jobs_active_idx on public.training_jobs (user_id)
  where status in ('initializing', 'running');

-- --- claim queued jobs ---------------------------------------------------------------------------

-- Claims up to p_limit queued jobs in one statement, fairly and within the limits:
--
-- - no user gets more than their limit of active jobs (user_job_limits, else
--   p_default_user_limit);
-- - no GPU type gets more active jobs than its capacity (gpu_prices.max_active_jobs);
-- - round-robin across users: a job's turn is its owner's active jobs plus its place in the
--   owner's queue, so users with fewer active jobs go first and each user's oldest job first; a
--   user with 500 queued jobs takes one turn like everyone else.
--
-- Claims are serialised by a transaction-level advisory lock, so the limits are counted and the
-- slots taken in one transaction: two processors never both take the last slot. Only claims
-- wait for it (polls and records do not), and a claim takes milliseconds.
--
-- The work does not grow with the queue's depth: the users with queued jobs are found by a skip
-- scan of the queue index (one probe per user), and each user's first few queued jobs by the same
-- index.
--
-- Jobs left initializing without an external id by a cycle whose lease expired (it may have
-- crashed after the cluster accepted the job) are taken over first: they already hold their
-- slots. The idempotency key is stored here, before any submission: a resubmission after a crash
-- carries the same key, and the cluster answers with the job it already has. `hourly_rate` is
-- null for a GPU type without a price: the processor refuses such a job before submitting it.
create function public.processor_claim_queued(
  p_owner uuid,
  p_limit integer,
  p_lease_seconds integer,
  p_default_user_limit integer
) returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  result jsonb;
begin
  perform pg_advisory_xact_lock(hashtextextended('lora-runner:processor_claim_queued', 0));

  with recursive queued_users(user_id) as (
    (select j.user_id from public.training_jobs j
     where j.status = 'queued' order by j.user_id limit 1)
    union all
    select (select j.user_id from public.training_jobs j
            where j.status = 'queued' and j.user_id > q.user_id
            order by j.user_id limit 1)
    from queued_users q
    where q.user_id is not null
  ),
  active as (
    select j.user_id, j.gpu_config ->> 'gpu_type' as gpu_type, count(*)::integer as n
    from public.training_jobs j
    where j.status in ('initializing', 'running')
    group by 1, 2
  ),
  gpu_free as (
    select p.gpu_type, p.max_active_jobs - coalesce(sum(a.n), 0)::integer as free
    from public.gpu_prices p
    left join active a on a.gpu_type = p.gpu_type
    where p.max_active_jobs is not null
    group by p.gpu_type, p.max_active_jobs
  ),
  user_active as (
    select a.user_id, sum(a.n)::integer as n from active a group by a.user_id
  ),
  users as (
    select q.user_id,
           coalesce(ua.n, 0) as active_n,
           coalesce(l.max_active_jobs, p_default_user_limit) as user_limit
    from queued_users q
    left join user_active ua on ua.user_id = q.user_id
    left join public.user_job_limits l on l.user_id = q.user_id
    where q.user_id is not null
  ),
  candidates as (
    select c.id, c.created_at, c.gpu_type, u.active_n + c.place as turn
    from (select * from users where user_limit > active_n) u
    cross join lateral (
      select t.id, t.created_at, t.gpu_type,
             row_number() over (order by t.created_at) as place
      from (
        select j.id, j.created_at, j.gpu_type,
               row_number() over (partition by j.gpu_type order by j.created_at) as type_place,
               f.free
        from (
          -- The owner's oldest queued jobs, skipping GPU types with no free slot: a job waiting
          -- for a full type takes no turn from its owner's other jobs. When some type has
          -- fewer free slots than the owner, a few more jobs are read, so that type does not
          -- hold up the owner's jobs on other types either.
          select q.id, q.created_at, q.gpu_config ->> 'gpu_type' as gpu_type
          from public.training_jobs q
          where q.user_id = u.user_id and q.status = 'queued'
            and not exists (select 1 from gpu_free f
                            where f.gpu_type = q.gpu_config ->> 'gpu_type' and f.free <= 0)
          order by q.created_at
          limit u.user_limit - u.active_n
                + case when exists (select 1 from gpu_free f
                                    where f.free > 0 and f.free < u.user_limit - u.active_n)
                       then 32 else 0 end
        ) j
        left join gpu_free f on f.gpu_type = j.gpu_type
      ) t
      where t.free is null or t.type_place <= t.free
      order by t.created_at
      limit u.user_limit - u.active_n
    ) c
  ),
  fair as (
    select c.id, c.turn, c.created_at, c.gpu_type,
           row_number() over (partition by c.gpu_type order by c.turn, c.created_at) as gpu_place
    from candidates c
  ),
  picked as (
    select f.id, f.turn, f.created_at
    from fair f
    left join gpu_free g on g.gpu_type = f.gpu_type
    where g.free is null or f.gpu_place <= g.free
    order by f.turn, f.created_at
    limit p_limit
  ),
  rescued as (
    select j.id
    from public.training_jobs j
    where j.status = 'initializing'
      and j.external_job_id is null
      and (j.lease_expires_at is null or j.lease_expires_at < now())
    order by j.created_at
    limit p_limit
    for update skip locked
  ),
  fresh as (
    select j.id
    from public.training_jobs j
    join picked p on p.id = j.id
    where j.status = 'queued'
    for update of j skip locked
  ),
  taken as (
    select id from rescued
    union all
    (select id from fresh limit greatest(p_limit - (select count(*) from rescued), 0))
  ),
  claimed as (
    update public.training_jobs j
    set status = 'initializing',
        lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        idempotency_key = coalesce(j.idempotency_key, gen_random_uuid())
    from taken
    where j.id = taken.id
    returning j.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
    'job_id', c.id,
    'user_id', c.user_id,
    'idempotency_key', c.idempotency_key,
    'hyperparameters', c.hyperparameters,
    'gpu_config', c.gpu_config,
    'hourly_rate', p.hourly_rate,
    'total_epochs', c.total_epochs,
    'attempts', c.attempts,
    'dataset_id', d.id,
    'dataset_name', d.name,
    'storage_bucket', d.storage_bucket,
    'storage_path', d.storage_path
  ) order by c.created_at), '[]'::jsonb)
  into result
  from claimed c
  join public.datasets d on d.id = c.dataset_id
  left join public.gpu_prices p on p.gpu_type = c.gpu_config ->> 'gpu_type';

  return result;
end;
$$;

revoke execute on function public.processor_claim_queued(uuid, integer, integer, integer)
  from public, anon, authenticated;
grant execute on function public.processor_claim_queued(uuid, integer, integer, integer)
  to service_role;

-- --- a queued job's place in line ----------------------------------------------------------------

-- Where the caller's queued job stands, and why it waits: `position` counts the queued jobs on
-- its GPU type that the round-robin order puts before it (1: next), `reason` is one of
-- `user_limit` (the owner has as many active jobs as their limit), `gpu_capacity` (every slot
-- of the GPU type is taken) or `in_line`, with `message` saying it for a person. When
-- the GPU type has a capacity and recent runs on it, `estimated_start_at` is now plus the waves
-- ahead (position / capacity, rounded up) times their average run time, to the minute; NULL
-- otherwise. NULL for a job that is not queued, does not exist or is not the caller's.
--
-- SECURITY DEFINER, because the position counts other users' jobs, which RLS hides from the
-- caller; it answers only for the caller's own job, and only these numbers. The order it counts
-- is the claim's: a job's turn is its owner's active jobs plus its place in the owner's queue.
create function public.get_job_queue(p_job_id uuid, p_default_user_limit integer) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  job public.training_jobs;
  gpu text;
  user_active integer;
  user_limit integer;
  gpu_active integer;
  capacity integer;
  ahead integer;
  my_turn bigint;
  average_run interval;
  estimated timestamptz;
  reason text;
  message text;
begin
  select * into job from public.training_jobs j
  where j.id = p_job_id and j.user_id = (select auth.uid()) and j.status = 'queued';
  if job.id is null then
    return null;
  end if;
  gpu := job.gpu_config ->> 'gpu_type';

  select count(*) into user_active from public.training_jobs j
  where j.user_id = job.user_id and j.status in ('initializing', 'running');
  select coalesce((select l.max_active_jobs from public.user_job_limits l
                   where l.user_id = job.user_id), p_default_user_limit)
  into user_limit;
  select count(*) into gpu_active from public.training_jobs j
  where j.gpu_config ->> 'gpu_type' = gpu and j.status in ('initializing', 'running');
  select p.max_active_jobs into capacity from public.gpu_prices p where p.gpu_type = gpu;

  -- The job's turn: its owner's active jobs plus its place in the owner's queue.
  select user_active + count(*) + 1 into my_turn
  from public.training_jobs q
  where q.user_id = job.user_id and q.status = 'queued' and q.created_at < job.created_at;

  -- Ahead of it: each user's queued jobs on the same GPU type whose turn comes first. Only the
  -- first (my_turn - active) jobs of each queue can, so each user's queue is read that far
  -- and no further (the users found by the same skip scan as the claim's).
  with recursive queued_users(user_id) as (
    (select j.user_id from public.training_jobs j
     where j.status = 'queued' order by j.user_id limit 1)
    union all
    select (select j.user_id from public.training_jobs j
            where j.status = 'queued' and j.user_id > q.user_id
            order by j.user_id limit 1)
    from queued_users q
    where q.user_id is not null
  ),
  active as (
    select j.user_id, count(*)::integer as n from public.training_jobs j
    where j.status in ('initializing', 'running') group by j.user_id
  )
  select coalesce(sum(x.n), 0)::integer into ahead
  from queued_users u
  left join active a on a.user_id = u.user_id
  cross join lateral (
    select count(*) filter (
             where t.gpu_type = gpu and t.id <> job.id
               and (t.turn < my_turn or (t.turn = my_turn and t.created_at < job.created_at))
           ) as n
    from (
      select q.id, q.created_at, q.gpu_config ->> 'gpu_type' as gpu_type,
             coalesce(a.n, 0) + row_number() over (order by q.created_at) as turn
      from (select q.id, q.created_at, q.gpu_config from public.training_jobs q
            where q.user_id = u.user_id and q.status = 'queued'
            order by q.created_at
            limit greatest(my_turn - coalesce(a.n, 0), 0)) q
    ) t
  ) x
  where u.user_id is not null;

  if user_active >= user_limit then
    reason := 'user_limit';
    message := format('You have %s of %s jobs running.', user_active, user_limit);
  elsif capacity is not null and gpu_active >= capacity then
    reason := 'gpu_capacity';
    message := format('All %s %s slots are busy.', capacity, gpu);
  else
    reason := 'in_line';
    message := case when ahead = 0 then 'Next in line.'
                    else format('In line: %s %s ahead of yours on %s.', ahead,
                                case when ahead = 1 then 'job' else 'jobs' end, gpu) end;
  end if;

  if capacity is not null then
    select avg(j.run_ended_at - j.run_started_at) into average_run
    from (select r.run_started_at, r.run_ended_at from public.training_jobs r
          where r.gpu_config ->> 'gpu_type' = gpu and r.status = 'completed'
            and r.run_started_at is not null and r.run_ended_at is not null
          order by r.completed_at desc limit 50) j;
    if average_run is not null then
      estimated := date_trunc('minute', now()
        + average_run * ceil((ahead + 1)::numeric / capacity)::integer + interval '1 minute');
    end if;
  end if;

  return jsonb_build_object(
    'position', ahead + 1,
    'reason', reason,
    'message', message,
    'estimated_start_at', estimated
  );
end;
$$;

revoke execute on function public.get_job_queue(uuid, integer) from public, anon;
grant execute on function public.get_job_queue(uuid, integer) to authenticated, service_role;
