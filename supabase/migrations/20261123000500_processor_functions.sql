-- The processor's operations (DESIGN section 7), one set-based call per phase of a cycle, so the
-- number of statements a cycle sends does not grow with the number of jobs.
--
-- Leases: every job a cycle works on carries `lease_owner` (that cycle's id) and
-- `lease_expires_at`. Claims take jobs whose lease is free or expired (this is how a crashed
-- cycle's jobs are rescued), and every write checks the lease is still this cycle's: a cycle
-- that lost its lease to another changes nothing. No transaction spans a cluster call: the
-- Python side claims, commits, calls the cluster, then records in a new transaction.
--
-- Called as service_role only.

create index training_jobs_unsubmitted_idx on public.training_jobs (created_at)
  where status = 'initializing' and external_job_id is null;

-- --- claim queued jobs ---------------------------------------------------------------------------

-- Queued jobs become initializing, and jobs left initializing without an external id by a cycle
-- whose lease expired (it may have crashed after the cluster accepted the job) are taken over.
-- The idempotency key is stored here, before any submission: a resubmission after a crash
-- carries the same key, and the cluster answers with the job it already has.
create function public.processor_claim_queued(
  p_owner uuid,
  p_limit integer,
  p_lease_seconds integer
) returns jsonb
language sql
volatile
set search_path = ''
as $$
  with picked as (
    select j.id
    from public.training_jobs j
    where j.status = 'queued'
       or (j.status = 'initializing'
           and j.external_job_id is null
           and (j.lease_expires_at is null or j.lease_expires_at < now()))
    order by j.created_at
    limit p_limit
    for update skip locked
  ),
  claimed as (
    update public.training_jobs j
    set status = 'initializing',
        lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        idempotency_key = coalesce(j.idempotency_key, gen_random_uuid())
    from picked
    where j.id = picked.id
    returning j.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
    'job_id', c.id,
    'user_id', c.user_id,
    'idempotency_key', c.idempotency_key,
    'hyperparameters', c.hyperparameters,
    'gpu_config', c.gpu_config,
    'total_epochs', c.total_epochs,
    'attempts', c.attempts,
    'dataset_id', d.id,
    'dataset_name', d.name,
    'storage_bucket', d.storage_bucket,
    'storage_path', d.storage_path
  ) order by c.created_at), '[]'::jsonb)
  from claimed c
  join public.datasets d on d.id = c.dataset_id
$$;

-- --- record submissions --------------------------------------------------------------------------

-- p_results: [{job_id, outcome: submitted | rejected | transient | skipped, external_job_id, message}]
-- `rejected` is permanent (the cluster refused the job, or its dataset cannot be read): the job
-- fails with the message. `transient` counts an attempt; the job fails at p_max_attempts.
-- `skipped` (the cycle ran out of time) only releases the lease: the next cycle resubmits with the
-- same idempotency key.
-- A job cancelled while its submission was in flight still gets its external id recorded, so
-- the cancel can be delivered to the cluster.
create function public.processor_record_submissions(
  p_owner uuid,
  p_results jsonb,
  p_max_attempts integer
) returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  n_submitted integer;
  n_failed integer;
  n_retry integer;
begin
  with r as (
    select * from jsonb_to_recordset(p_results)
      as r(job_id uuid, outcome text, external_job_id text, message text)
  ),
  submitted as (
    update public.training_jobs j
    set external_job_id = r.external_job_id,
        attempts = 0,
        next_poll_at = now(),
        lease_owner = null,
        lease_expires_at = null
    from r
    where r.outcome = 'submitted'
      and j.id = r.job_id
      and (j.lease_owner = p_owner or j.status = 'cancelled')
      and (j.external_job_id is null or j.external_job_id = r.external_job_id)
    returning 1
  )
  select count(*) into n_submitted from submitted;

  with r as (
    select * from jsonb_to_recordset(p_results)
      as r(job_id uuid, outcome text, external_job_id text, message text)
  ),
  failed as (
    update public.training_jobs j
    set status = 'failed',
        error_message = case
          when r.outcome = 'rejected' then r.message
          else format('The GPU cluster could not be reached after %s attempts: %s',
                      j.attempts + 1, r.message)
        end,
        attempts = j.attempts + 1
    from r
    where j.id = r.job_id
      and j.lease_owner = p_owner
      and j.status = 'initializing'
      and (r.outcome = 'rejected' or (r.outcome = 'transient' and j.attempts + 1 >= p_max_attempts))
    returning 1
  )
  select count(*) into n_failed from failed;

  with r as (
    select * from jsonb_to_recordset(p_results)
      as r(job_id uuid, outcome text, external_job_id text, message text)
  ),
  retry as (
    update public.training_jobs j
    set attempts = j.attempts + case when r.outcome = 'transient' then 1 else 0 end,
        lease_owner = null,
        lease_expires_at = null
    from r
    where j.id = r.job_id
      and j.lease_owner = p_owner
      and j.status = 'initializing'
      and r.outcome in ('transient', 'skipped')
    returning 1
  )
  select count(*) into n_retry from retry;

  return jsonb_build_object('submitted', n_submitted, 'failed', n_failed, 'retrying', n_retry);
end;
$$;

-- --- claim jobs due for a poll -------------------------------------------------------------------

create function public.processor_claim_polls(
  p_owner uuid,
  p_limit integer,
  p_lease_seconds integer
) returns jsonb
language sql
volatile
set search_path = ''
as $$
  with picked as (
    select j.id
    from public.training_jobs j
    where j.status in ('initializing', 'running')
      and j.external_job_id is not null
      and (j.next_poll_at is null or j.next_poll_at <= now())
      and (j.lease_expires_at is null or j.lease_expires_at < now())
    order by j.next_poll_at nulls first
    limit p_limit
    for update skip locked
  ),
  claimed as (
    update public.training_jobs j
    set lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    from picked
    where j.id = picked.id
    returning j.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
    'job_id', c.id,
    'external_job_id', c.external_job_id,
    'status', c.status,
    -- Ask for the points after the last one stored, so none is lost or stored twice.
    'since_step', coalesce((select max(m.step) from public.metrics_points m where m.job_id = c.id), 0)
  )), '[]'::jsonb)
  from claimed c
$$;

-- --- record polls --------------------------------------------------------------------------------

-- p_results: [{job_id, outcome: ok | transient | rejected | skipped, message,
--              status, progress, current_epoch, total_epochs, current_step, total_steps,
--              metrics, history: [points], error: {code, message}, artifact_uri}]
-- p_settings: {max_attempts, poll_interval_seconds, stall_factor, stall_min_seconds}
create function public.processor_record_polls(
  p_owner uuid,
  p_results jsonb,
  p_settings jsonb
) returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  max_attempts integer := coalesce((p_settings ->> 'max_attempts')::integer, 5);
  poll_interval interval :=
    make_interval(secs => coalesce((p_settings ->> 'poll_interval_seconds')::double precision, 15));
  stall_factor double precision := coalesce((p_settings ->> 'stall_factor')::double precision, 10);
  stall_min interval :=
    make_interval(secs => coalesce((p_settings ->> 'stall_min_seconds')::double precision, 300));
  n_ignored integer;
  n_completed integer;
  n_failed integer;
  n_cancelled integer;
  n_budget integer;
begin
  create temp table processor_polls (
    job_id uuid primary key,
    outcome text not null,
    message text,
    cluster_status text,
    progress numeric,
    current_epoch integer,
    total_epochs integer,
    current_step integer,
    total_steps integer,
    metrics jsonb,
    history jsonb,
    error jsonb,
    artifact_uri text,
    old_status public.job_status,
    old_step integer
  ) on commit drop;

  -- Only the jobs whose lease this cycle still holds; locked until the transaction ends, so a
  -- concurrent cancel waits for this write and then sees it.
  insert into processor_polls
  select r.job_id, r.outcome, r.message, r.status, r.progress, r.current_epoch, r.total_epochs,
         r.current_step, r.total_steps, r.metrics, r.history, r.error, r.artifact_uri,
         j.status, j.current_step
  from jsonb_to_recordset(p_results) as r(
    job_id uuid, outcome text, message text, status text, progress numeric, current_epoch integer,
    total_epochs integer, current_step integer, total_steps integer, metrics jsonb,
    history jsonb, error jsonb, artifact_uri text)
  join public.training_jobs j on j.id = r.job_id
  where j.lease_owner = p_owner
    and j.status in ('initializing', 'running')
  for update of j;

  select jsonb_array_length(p_results) - count(*) into n_ignored from processor_polls;

  -- Every history point once: the primary key (job_id, step) drops points polled twice.
  insert into public.metrics_points (
    job_id, step, epoch, training_loss, validation_loss, learning_rate, throughput,
    gpu_utilization, gpu_memory, recorded_at)
  select p.job_id, h.step, coalesce(h.epoch, 0), h.training_loss, h.validation_loss,
         h.learning_rate, h.throughput, h.gpu_utilization, h.gpu_memory,
         coalesce(h.recorded_at, now())
  from processor_polls p
  cross join lateral jsonb_to_recordset(coalesce(p.history, '[]'::jsonb)) as h(
    step integer, epoch integer, training_loss double precision,
    validation_loss double precision, learning_rate double precision,
    throughput double precision, gpu_utilization double precision, gpu_memory double precision,
    recorded_at timestamptz)
  where p.outcome = 'ok'
  on conflict (job_id, step) do nothing;

  -- The cluster started (or already finished) the job: it passes through running, which stamps
  -- started_at and is announced once.
  update public.training_jobs j
  set status = 'running'
  from processor_polls p
  where j.id = p.job_id
    and p.outcome = 'ok'
    and p.old_status = 'initializing'
    and p.cluster_status in ('running', 'completed');

  insert into public.notifications (user_id, job_id, type, title, message, metadata, dedupe_key)
  select j.user_id, j.id, 'training_started', 'Training started',
         format('Your LoRA training on "%s" is running on %s x %s.',
                d.name, j.gpu_config ->> 'gpu_count', j.gpu_config ->> 'gpu_type'),
         jsonb_build_object('job_id', j.id),
         format('job:%s:started', j.id)
  from processor_polls p
  join public.training_jobs j on j.id = p.job_id
  join public.datasets d on d.id = j.dataset_id
  where p.outcome = 'ok' and j.status = 'running'
  on conflict (dedupe_key) do nothing;

  -- Progress, metrics and the running cost; the lease is released and the next poll scheduled.
  update public.training_jobs j
  set progress = least(greatest(coalesce(p.progress, j.progress), 0), 100),
      current_epoch = coalesce(p.current_epoch, j.current_epoch),
      total_epochs = coalesce(p.total_epochs, j.total_epochs),
      current_step = coalesce(p.current_step, j.current_step),
      total_steps = coalesce(p.total_steps, j.total_steps),
      current_metrics = coalesce(p.metrics, j.current_metrics),
      last_progress_at = case
        when coalesce(p.current_step, 0) > j.current_step or j.last_progress_at is null then now()
        else j.last_progress_at
      end,
      current_cost = coalesce(
        case when j.started_at is null then 0
             else public.job_compute_cost(j.gpu_config, j.started_at, now()) end,
        j.current_cost),
      attempts = 0,
      next_poll_at = now() + poll_interval,
      lease_owner = null,
      lease_expires_at = null
  from processor_polls p
  where j.id = p.job_id and p.outcome = 'ok';

  -- Estimates follow from the cost and progress just written.
  update public.training_jobs j
  set estimated_total_cost = round(j.current_cost * 100 / j.progress, 4),
      estimated_completion_at = now()
        + (now() - j.started_at) * ((100 - j.progress) / j.progress)::double precision
  from processor_polls p
  where j.id = p.job_id and p.outcome = 'ok'
    and j.status = 'running' and j.progress > 0 and j.started_at is not null;

  -- Milestones at 25, 50 and 75 %, each once, while the job is still running.
  insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
  select j.user_id, j.id, 'training_progress', format('Training %s%% done', m.pct),
         format('Your LoRA training on "%s" is %s%% done (step %s of %s).',
                d.name, m.pct, j.current_step, j.total_steps),
         'low',
         jsonb_build_object('job_id', j.id, 'progress', m.pct),
         format('job:%s:progress:%s', j.id, m.pct)
  from processor_polls p
  join public.training_jobs j on j.id = p.job_id
  join public.datasets d on d.id = j.dataset_id
  cross join (values (25), (50), (75)) as m(pct)
  where p.outcome = 'ok' and j.status = 'running' and p.cluster_status = 'running'
    and j.progress >= m.pct
  order by j.id, m.pct
  on conflict (dedupe_key) do nothing;

  -- Stalled: running, no new step this poll, and the last one far longer ago than usual.
  insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
  select j.user_id, j.id, 'training_stalled', 'Training may be stalled',
         format('Your LoRA training on "%s" has not advanced past step %s since %s.',
                d.name, j.current_step, to_char(j.last_progress_at at time zone 'UTC',
                                                 'YYYY-MM-DD HH24:MI:SS "UTC"')),
         'high',
         jsonb_build_object('job_id', j.id, 'step', j.current_step,
                            'last_progress_at', j.last_progress_at),
         format('job:%s:stalled', j.id)
  from processor_polls p
  join public.training_jobs j on j.id = p.job_id
  join public.datasets d on d.id = j.dataset_id
  where p.outcome = 'ok' and p.cluster_status = 'running' and j.status = 'running'
    and coalesce(p.current_step, 0) <= p.old_step
    and j.last_progress_at < now() - greatest(
      stall_min,
      case when j.current_step > 0 and j.started_at is not null
           then (j.last_progress_at - j.started_at) / j.current_step * stall_factor
           else stall_min end)
  on conflict (dedupe_key) do nothing;

  -- Terminal states the cluster reports. The state machine trigger writes the final cost, the
  -- cost record and the notification.
  with done as (
    update public.training_jobs j
    set status = p.cluster_status::public.job_status,
        error_message = case when p.cluster_status = 'failed'
          then coalesce(p.error ->> 'message', 'The GPU cluster reported the job failed without a reason.')
          else j.error_message end,
        artifact_location = coalesce(p.artifact_uri, j.artifact_location),
        -- Cancelled by the cluster itself: there is nothing left to tell it.
        cancel_delivered_at = case when p.cluster_status = 'cancelled' then now()
                                   else j.cancel_delivered_at end
    from processor_polls p
    where j.id = p.job_id and p.outcome = 'ok'
      and p.cluster_status in ('completed', 'failed', 'cancelled')
      and j.status in ('initializing', 'running')
    returning j.status
  )
  select count(*) filter (where status = 'completed'),
         count(*) filter (where status = 'failed'),
         count(*) filter (where status = 'cancelled')
  into n_completed, n_failed, n_cancelled
  from done;

  -- The per-job budget (hyperparameters.max_cost): reaching it cancels the job, says why, and
  -- leaves a cancel for the cluster to be delivered.
  with over as (
    update public.training_jobs j
    set status = 'cancelled',
        error_message = format('it reached its budget of $%s',
                               to_char((j.hyperparameters ->> 'max_cost')::numeric, 'FM999999990.0099'))
    from processor_polls p
    where j.id = p.job_id and p.outcome = 'ok'
      and j.status = 'running'
      and jsonb_typeof(j.hyperparameters -> 'max_cost') = 'number'
      and j.current_cost >= (j.hyperparameters ->> 'max_cost')::numeric
    returning 1
  )
  select count(*) into n_budget from over;

  -- A refusal from the cluster (e.g. it no longer knows the job) is final; transient errors
  -- count an attempt and fail the job at max_attempts, saying why.
  with failed as (
    update public.training_jobs j
    set status = 'failed',
        attempts = j.attempts + 1,
        error_message = case
          when p.outcome = 'rejected' then p.message
          else format('The GPU cluster could not be reached after %s attempts: %s',
                      j.attempts + 1, p.message)
        end
    from processor_polls p
    where j.id = p.job_id
      and (p.outcome = 'rejected' or (p.outcome = 'transient' and j.attempts + 1 >= max_attempts))
    returning 1
  )
  select n_failed + count(*) into n_failed from failed;

  -- Transient errors wait for the next poll; jobs the cycle had no time for are due at once.
  update public.training_jobs j
  set attempts = j.attempts + case when p.outcome = 'transient' then 1 else 0 end,
      next_poll_at = case when p.outcome = 'transient' then now() + poll_interval else now() end,
      lease_owner = null,
      lease_expires_at = null
  from processor_polls p
  where j.id = p.job_id and p.outcome in ('transient', 'skipped')
    and j.status in ('initializing', 'running');

  return jsonb_build_object(
    'completed', n_completed,
    'failed', n_failed,
    'cancelled', n_cancelled + n_budget,
    'budget_cancelled', n_budget,
    'ignored', n_ignored
  );
end;
$$;

-- --- cancels to deliver --------------------------------------------------------------------------

-- Cancelled jobs the cluster has not yet acknowledged. Delivery is idempotent at the cluster, so
-- two cycles delivering the same cancel is harmless; no lease needed.
--
-- A job cancelled while its submission was in flight, whose submission then failed without an
-- answer, has no external id, yet the cluster may have started it: such jobs come back with what
-- a resubmission needs, so the processor can learn the external id under the same idempotency
-- key and stop the run. Jobs cancelled before any submission (no idempotency key) never appear:
-- the state machine marks their cancel delivered, there being nothing to tell the cluster.
create function public.processor_pending_cancels(p_limit integer) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'job_id', j.id,
    'external_job_id', j.external_job_id,
    'idempotency_key', j.idempotency_key,
    'hyperparameters', j.hyperparameters,
    'gpu_config', j.gpu_config,
    'storage_bucket', d.storage_bucket,
    'storage_path', d.storage_path
  ) order by j.cancel_requested_at), '[]'::jsonb)
  from (
    select id, external_job_id, idempotency_key, hyperparameters, gpu_config, dataset_id,
           cancel_requested_at
    from public.training_jobs
    where cancel_requested_at is not null
      and cancel_delivered_at is null
      and (external_job_id is not null or idempotency_key is not null)
    order by cancel_requested_at
    limit p_limit
  ) j
  join public.datasets d on d.id = j.dataset_id
$$;

-- p_deliveries: [{job_id, external_job_id}] for cancels the cluster acknowledged (or that it
-- never needed); an external id learned while delivering is kept when the job had none.
create function public.processor_record_cancels_delivered(p_deliveries jsonb) returns integer
language sql
volatile
set search_path = ''
as $$
  with delivered as (
    update public.training_jobs j
    set cancel_delivered_at = now(),
        external_job_id = coalesce(j.external_job_id, r.external_job_id)
    from jsonb_to_recordset(p_deliveries) as r(job_id uuid, external_job_id text)
    where j.id = r.job_id
      and j.cancel_delivered_at is null
    returning 1
  )
  select count(*)::integer from delivered
$$;

revoke execute on function
  public.processor_claim_queued(uuid, integer, integer),
  public.processor_record_submissions(uuid, jsonb, integer),
  public.processor_claim_polls(uuid, integer, integer),
  public.processor_record_polls(uuid, jsonb, jsonb),
  public.processor_pending_cancels(integer),
  public.processor_record_cancels_delivered(jsonb)
from public, anon, authenticated;

grant execute on function
  public.processor_claim_queued(uuid, integer, integer),
  public.processor_record_submissions(uuid, jsonb, integer),
  public.processor_claim_polls(uuid, integer, integer),
  public.processor_record_polls(uuid, jsonb, jsonb),
  public.processor_pending_cancels(integer),
  public.processor_record_cancels_delivered(jsonb)
to service_role;
