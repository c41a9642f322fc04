-- The training job state machine, enforced for every role (the service role included), and what
-- entering a terminal state always brings: a final cost, one cost record, one notification.
--
--   queued -> initializing -> running -> completed
--   cancelled from queued, initializing or running
--   failed from initializing or running (a dataset the cluster cannot read fails a job before it
--   ever runs)
--   nothing leaves completed, failed or cancelled
--
-- Refusals raise SQLSTATE PT409, which PostgREST answers as HTTP 409 and the Python gateway maps to
-- InvalidTransition.

create function public.job_transition_allowed(
  from_status public.job_status,
  to_status public.job_status
) returns boolean
language sql
immutable
set search_path = ''
as $$
  select (from_status, to_status) in (
    ('queued'::public.job_status, 'initializing'::public.job_status),
    ('queued', 'cancelled'),
    ('initializing', 'running'),
    ('initializing', 'failed'),
    ('initializing', 'cancelled'),
    ('running', 'completed'),
    ('running', 'failed'),
    ('running', 'cancelled')
  )
$$;

create function public.job_status_is_terminal(status public.job_status) returns boolean
language sql
immutable
set search_path = ''
as $$
  select status in ('completed'::public.job_status, 'failed', 'cancelled')
$$;

-- Compute cost of a job between two instants: hourly rate x gpu_count x hours. NULL when the GPU
-- type has no price, so callers decide what an unpriced GPU means instead of charging zero.
create function public.job_compute_cost(
  gpu_config jsonb,
  from_time timestamptz,
  to_time timestamptz
) returns numeric
language sql
stable
set search_path = ''
as $$
  select round(
    p.hourly_rate
      * (gpu_config ->> 'gpu_count')::numeric
      * greatest(extract(epoch from (to_time - from_time)), 0) / 3600.0,
    4
  )
  from public.gpu_prices p
  where p.gpu_type = gpu_config ->> 'gpu_type'
$$;

-- The interval a job is billed for: the run's own start and end as the cluster reported them,
-- falling back to when the job started running and ended here.
create function public.job_billed_interval(
  job public.training_jobs,
  out billed_from timestamptz,
  out billed_to timestamptz
)
language sql
stable
set search_path = ''
as $$
  select coalesce(job.run_started_at, job.started_at),
         coalesce(job.run_ended_at, job.completed_at, now())
$$;

-- What a job costs for that interval; 0 for a job that never ran, and its running cost when its
-- GPU type has lost its price (the processor refuses unpriced jobs before submitting them).
create function public.job_billed_cost(job public.training_jobs) returns numeric
language sql
stable
set search_path = ''
as $$
  select case
    when i.billed_from is null then 0
    else coalesce(public.job_compute_cost(job.gpu_config, i.billed_from, i.billed_to),
                  job.current_cost)
  end
  from public.job_billed_interval(job) i
$$;

create function public.enforce_job_state_machine() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    if new.status <> 'queued' then
      raise exception 'a new training job must start as queued, not %', new.status
        using errcode = 'PT409';
    end if;
    return new;
  end if;

  if new.status is not distinct from old.status then
    return new;
  end if;

  if public.job_status_is_terminal(old.status) then
    raise exception 'training job % is already %; it cannot become %', old.id, old.status, new.status
      using errcode = 'PT409',
            hint = 'completed, failed and cancelled are final';
  end if;

  if not public.job_transition_allowed(old.status, new.status) then
    raise exception 'training job % cannot go from % to %', old.id, old.status, new.status
      using errcode = 'PT409',
            hint = 'allowed: queued -> initializing -> running -> completed | failed | cancelled; cancel from any active status';
  end if;

  if new.status = 'running' then
    new.started_at := coalesce(new.started_at, now());
  end if;

  if public.job_status_is_terminal(new.status) then
    new.completed_at := coalesce(new.completed_at, now());
    new.next_poll_at := null;
    new.lease_owner := null;
    new.lease_expires_at := null;
    new.estimated_completion_at := null;
    if new.status = 'cancelled' then
      new.cancel_requested_at := coalesce(new.cancel_requested_at, now());
      -- Never submitted (no idempotency key, no external id): nothing to tell the cluster.
      if new.idempotency_key is null and new.external_job_id is null then
        new.cancel_delivered_at := coalesce(new.cancel_delivered_at, now());
      end if;
    end if;
    if new.status = 'completed' then
      new.progress := 100;
    end if;
    -- The running cost stops here: the run's own time as the cluster reported it, or the time
    -- since the job started running when the cluster reported none. When the run's real end is
    -- learned later (a cancel takes effect at the cluster after the job ended here), the
    -- processor bills it again from the run's times (lora_private.rebill_job).
    if new.final_cost is null then
      new.final_cost := public.job_billed_cost(new);
    end if;
    new.current_cost := new.final_cost;
  end if;

  return new;
end;
$$;

create trigger training_jobs_enforce_state_machine
  before insert or update of status on public.training_jobs
  for each row execute function public.enforce_job_state_machine();

-- Runs as the table owner: an owner cancelling their own job may not write cost records or
-- notifications themselves, but the cancel must still produce them.
create function public.record_job_finished() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  dataset_name text;
  price numeric;
  title text;
  body text;
  priority text;
  i record;
begin
  select d.name into dataset_name from public.datasets d where d.id = new.dataset_id;
  select p.hourly_rate into price from public.gpu_prices p
    where p.gpu_type = new.gpu_config ->> 'gpu_type';

  select * into i from public.job_billed_interval(new);

  insert into public.cost_records (user_id, job_id, cost_type, amount, billing_period, details)
  values (
    new.user_id,
    new.id,
    'training_compute',
    new.final_cost,
    to_char(new.completed_at at time zone 'UTC', 'YYYY-MM'),
    jsonb_build_object(
      'status', new.status,
      'gpu_type', new.gpu_config ->> 'gpu_type',
      'gpu_count', (new.gpu_config ->> 'gpu_count')::int,
      'hourly_rate', price,
      'started_at', i.billed_from,
      'completed_at', i.billed_to,
      'duration_seconds',
        case when i.billed_from is null then 0
             else greatest(extract(epoch from (i.billed_to - i.billed_from)), 0)::bigint end
    )
  )
  on conflict (job_id) where cost_type = 'training_compute' do nothing;

  case new.status
    when 'completed' then
      title := 'Training completed';
      body := format('Your LoRA training on "%s" finished. Final cost: $%s.',
                     dataset_name, to_char(new.final_cost, 'FM999999990.00'));
      priority := 'normal';
    when 'failed' then
      title := 'Training failed';
      body := format('Your LoRA training on "%s" failed: %s',
                     dataset_name, coalesce(new.error_message, 'the cluster gave no reason.'));
      priority := 'high';
    else
      title := 'Training cancelled';
      body := format('Your LoRA training on "%s" was cancelled%s. Cost so far: $%s.',
                     dataset_name,
                     coalesce(': ' || new.error_message, ''),
                     to_char(new.final_cost, 'FM999999990.00'));
      priority := 'normal';
  end case;

  insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
  values (
    new.user_id,
    new.id,
    'training_' || new.status::text,
    title,
    body,
    priority,
    jsonb_build_object('job_id', new.id, 'status', new.status, 'final_cost', new.final_cost),
    format('job:%s:%s', new.id, new.status)
  )
  on conflict (dedupe_key) do nothing;

  return null;
end;
$$;

create trigger training_jobs_record_finished
  after update of status on public.training_jobs
  for each row
  when (old.status is distinct from new.status
        and new.status in ('completed', 'failed', 'cancelled'))
  execute function public.record_job_finished();
