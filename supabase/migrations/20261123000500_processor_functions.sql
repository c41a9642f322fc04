-- The processor's operations (docs/architecture.md, "The processor cycle"): one set-based call per
-- phase of a cycle, so the number of statements a cycle sends does not grow with its jobs.
--
-- Leases: every job a cycle works on carries `lease_owner` (that cycle's id) and
-- `lease_expires_at`. Claims take jobs whose lease is free or expired (this is how a crashed
-- cycle's jobs are rescued), and every write checks the lease is still this cycle's: a cycle
-- that lost its lease to another changes nothing. No transaction spans a cluster call: the
-- Python side claims, commits, calls the cluster, then records in a new transaction.
--
-- The results the Python side hands back carry an `outcome` from a closed list (the enums in
-- shared/processor_contract.py); an unknown outcome is an error, never silently ignored.
-- Every tuning value is a parameter without a default: the processor's settings are the one
-- source of them.
--
-- Called as service_role only.

create schema if not exists lora_private;
revoke all on schema lora_private from public;
grant usage on schema lora_private to service_role;

create index training_jobs_unsubmitted_idx on public.training_jobs (created_at)
  where status = 'initializing' and external_job_id is null;

-- --- the outcome lists ---------------------------------------------------------------------------

create function public.processor_submission_outcomes() returns text[]
language sql
immutable
set search_path = ''
as $$ select array['submitted', 'rejected', 'transient', 'skipped'] $$;

create function public.processor_poll_outcomes() returns text[]
language sql
immutable
set search_path = ''
as $$ select array['ok', 'rejected', 'transient', 'skipped'] $$;

-- Raises 22023 naming every outcome in p_results that is not in p_allowed.
create function lora_private.require_outcomes(p_results jsonb, p_allowed text[]) returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  unknown text;
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'processor results must be a JSON array, not %', jsonb_typeof(p_results)
      using errcode = '22023';
  end if;
  select string_agg(distinct coalesce(r ->> 'outcome', '(none)'), ', ')
  into unknown
  from jsonb_array_elements(p_results) r
  where not coalesce(r ->> 'outcome' = any (p_allowed), false);
  if unknown is not null then
    raise exception 'unknown processor outcome: %', unknown
      using errcode = '22023',
            hint = format('expected one of %s', array_to_string(p_allowed, ', '));
  end if;
end;
$$;

-- Claiming queued jobs, fairly and within limits, is in the fair-queueing migration.

-- --- record submissions --------------------------------------------------------------------------

-- p_results: [{job_id, outcome, external_job_id, message}], outcome in
-- processor_submission_outcomes().
-- `rejected` is permanent (the cluster refused the job, its dataset cannot be read, its GPU has
-- no price): the job fails with the message and nothing runs. `transient` counts an attempt; at
-- p_max_attempts the job fails, and since the cluster may have started a run it never answered
-- about, a cancel is left to deliver. `skipped` (the cycle ran out of time) only releases the
-- lease: the next cycle resubmits with the same idempotency key.
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
  perform lora_private.require_outcomes(p_results, public.processor_submission_outcomes());

  create temp table processor_submissions on commit drop as
  select * from jsonb_to_recordset(p_results)
    as r(job_id uuid, outcome text, external_job_id text, message text);

  with submitted as (
    update public.training_jobs j
    set external_job_id = r.external_job_id,
        attempts = 0,
        next_poll_at = now(),
        lease_owner = null,
        lease_expires_at = null
    from pg_temp.processor_submissions r
    where r.outcome = 'submitted'
      and j.id = r.job_id
      and (j.lease_owner = p_owner or j.status = 'cancelled')
      and (j.external_job_id is null or j.external_job_id = r.external_job_id)
    returning 1
  )
  select count(*) into n_submitted from submitted;

  with failed as (
    update public.training_jobs j
    set status = 'failed',
        error_message = case
          when r.outcome = 'rejected' then r.message
          else format('The GPU cluster could not be reached after %s attempts: %s. '
                      'The cluster was asked to stop any run it may have started.',
                      j.attempts + 1, r.message)
        end,
        attempts = j.attempts + 1,
        cancel_requested_at = case when r.outcome = 'transient' then now() end
    from pg_temp.processor_submissions r
    where j.id = r.job_id
      and j.lease_owner = p_owner
      and j.status = 'initializing'
      and (r.outcome = 'rejected' or (r.outcome = 'transient' and j.attempts + 1 >= p_max_attempts))
    returning 1
  )
  select count(*) into n_failed from failed;

  with retry as (
    update public.training_jobs j
    set attempts = j.attempts + case when r.outcome = 'transient' then 1 else 0 end,
        lease_owner = null,
        lease_expires_at = null
    from pg_temp.processor_submissions r
    where j.id = r.job_id
      and j.lease_owner = p_owner
      and j.status = 'initializing'
      and r.outcome in ('transient', 'skipped')
    returning 1
  )
  select count(*) into n_retry from retry;

  drop table pg_temp.processor_submissions;
  return jsonb_build_object('submitted', n_submitted, 'failed', n_failed, 'retrying', n_retry);
end;
$$;

-- --- claim jobs due for a poll -------------------------------------------------------------------

-- Active jobs due for a poll, and ended jobs whose run the cluster has not yet confirmed ended
-- (for up to p_settle_seconds after they ended here): cancelled or given-up jobs whose run may
-- have gone on, whose last points, run times and true outcome are still to be learned.
create function public.processor_claim_polls(
  p_owner uuid,
  p_limit integer,
  p_lease_seconds integer,
  p_settle_seconds double precision
) returns jsonb
language sql
volatile
set search_path = ''
as $$
  with picked as (
    select j.id
    from public.training_jobs j
    where j.external_job_id is not null
      and j.run_settled_at is null
      and (j.next_poll_at is null or j.next_poll_at <= now())
      and (j.lease_expires_at is null or j.lease_expires_at < now())
      and (j.status in ('initializing', 'running')
           or j.completed_at > now() - make_interval(secs => p_settle_seconds))
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

-- --- record polls: one helper per rule -----------------------------------------------------------
--
-- Each helper works on pg_temp.processor_polls, which processor_record_polls fills with the
-- results whose job this cycle still holds. `settling` rows are jobs that already ended here.

-- Every history point once: the primary key (job_id, step) drops points polled twice.
create function lora_private.polls_store_points() returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  insert into public.metrics_points (
    job_id, step, epoch, training_loss, validation_loss, learning_rate, throughput,
    gpu_utilization, gpu_memory, recorded_at)
  select p.job_id, h.step, coalesce(h.epoch, 0), h.training_loss, h.validation_loss,
         h.learning_rate, h.throughput, h.gpu_utilization, h.gpu_memory,
         coalesce(h.recorded_at, now())
  from pg_temp.processor_polls p
  cross join lateral jsonb_to_recordset(coalesce(p.history, '[]'::jsonb)) as h(
    step integer, epoch integer, training_loss double precision,
    validation_loss double precision, learning_rate double precision,
    throughput double precision, gpu_utilization double precision, gpu_memory double precision,
    recorded_at timestamptz)
  where p.outcome = 'ok'
  on conflict (job_id, step) do nothing;
end;
$$;

-- The run's own start and end, clamped to what is known: not before the job existed, not after
-- now, and an end not before the start.
create function lora_private.polls_record_run_times() returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.training_jobs j
  set run_started_at = coalesce(least(greatest(p.started_at, j.created_at), now()),
                                j.run_started_at)
  from pg_temp.processor_polls p
  where j.id = p.job_id and p.outcome = 'ok';

  update public.training_jobs j
  set run_ended_at = least(greatest(p.ended_at, coalesce(j.run_started_at, j.created_at)), now())
  from pg_temp.processor_polls p
  where j.id = p.job_id and p.outcome = 'ok' and p.ended_at is not null;
end;
$$;

-- The cluster started (or already finished) the job: it passes through running, which stamps
-- started_at and is announced once.
create function lora_private.polls_mark_running() returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.training_jobs j
  set status = 'running'
  from pg_temp.processor_polls p
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
  from pg_temp.processor_polls p
  join public.training_jobs j on j.id = p.job_id
  join public.datasets d on d.id = j.dataset_id
  where p.outcome = 'ok' and not p.settling and j.status = 'running'
  on conflict (dedupe_key) do nothing;
end;
$$;

-- Progress, metrics and the running cost (from the run's own clock); contact is back, the lease
-- is released and the next poll scheduled.
create function lora_private.polls_record_progress(p_poll_interval interval) returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.training_jobs j
  set progress = least(greatest(coalesce(p.progress, j.progress), 0), 100),
      current_epoch = coalesce(p.current_epoch, j.current_epoch),
      total_epochs = coalesce(p.total_epochs, j.total_epochs),
      current_step = coalesce(p.current_step, j.current_step),
      total_steps = coalesce(p.total_steps, j.total_steps),
      current_metrics = coalesce(p.metrics, j.current_metrics),
      status_message = left(p.status_message, 1000),
      last_progress_at = case
        when coalesce(p.current_step, 0) > j.current_step or j.last_progress_at is null then now()
        else j.last_progress_at
      end,
      stalled_since = case
        when coalesce(p.current_step, 0) > j.current_step then null
        else j.stalled_since
      end,
      current_cost = coalesce(public.job_billed_cost(j), j.current_cost),
      lost_contact_since = null,
      attempts = 0,
      next_poll_at = now() + p_poll_interval,
      lease_owner = null,
      lease_expires_at = null
  from pg_temp.processor_polls p
  where j.id = p.job_id and p.outcome = 'ok' and not p.settling;

  -- Estimates follow from the cost and progress just written.
  update public.training_jobs j
  set estimated_total_cost = round(j.current_cost * 100 / j.progress, 4),
      estimated_completion_at = now()
        + (now() - j.started_at) * ((100 - j.progress) / j.progress)::double precision
  from pg_temp.processor_polls p
  where j.id = p.job_id and p.outcome = 'ok' and not p.settling
    and j.status = 'running' and j.progress > 0 and j.started_at is not null;
end;
$$;

-- Milestones at 25, 50 and 75 %, each once, while the job is still running.
create function lora_private.polls_notify_milestones() returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
  select j.user_id, j.id, 'training_progress', format('Training %s%% done', m.pct),
         format('Your LoRA training on "%s" is %s%% done (step %s of %s).',
                d.name, m.pct, j.current_step, j.total_steps),
         'low',
         jsonb_build_object('job_id', j.id, 'progress', m.pct),
         format('job:%s:progress:%s', j.id, m.pct)
  from pg_temp.processor_polls p
  join public.training_jobs j on j.id = p.job_id
  join public.datasets d on d.id = j.dataset_id
  cross join (values (25), (50), (75)) as m(pct)
  where p.outcome = 'ok' and not p.settling and j.status = 'running'
    and p.cluster_status = 'running' and j.progress >= m.pct
  order by j.id, m.pct
  on conflict (dedupe_key) do nothing;
end;
$$;

-- Stalled: running, no new step this poll, and the last one far longer ago than the usual step
-- time. The job says since when (get-job shows it), and the owner is told once.
create function lora_private.polls_mark_stalled(p_stall_factor double precision, p_stall_min interval)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  with stalled as (
    update public.training_jobs j
    set stalled_since = j.last_progress_at
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.outcome = 'ok' and not p.settling
      and p.cluster_status = 'running' and j.status = 'running'
      and j.stalled_since is null
      and coalesce(p.current_step, 0) <= p.old_step
      and j.last_progress_at < now() - greatest(
        p_stall_min,
        case when j.current_step > 0 and j.started_at is not null
             then (j.last_progress_at - j.started_at) / j.current_step * p_stall_factor
             else p_stall_min end)
    returning j.*
  )
  insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
  select s.user_id, s.id, 'training_stalled', 'Training may be stalled',
         format('Your LoRA training on "%s" has not advanced past step %s since %s.',
                d.name, s.current_step, to_char(s.last_progress_at at time zone 'UTC',
                                                 'YYYY-MM-DD HH24:MI:SS "UTC"')),
         'high',
         jsonb_build_object('job_id', s.id, 'step', s.current_step,
                            'last_progress_at', s.last_progress_at),
         format('job:%s:stalled', s.id)
  from stalled s
  join public.datasets d on d.id = s.dataset_id
  on conflict (dedupe_key) do nothing;
end;
$$;

-- Terminal states the cluster reports for active jobs: the cluster's word is final, so the run is
-- settled too. The state machine trigger writes the final cost (from the run's times), the cost
-- record and the notification. Returns {completed, failed, cancelled}.
create function lora_private.polls_finish() returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  result jsonb;
begin
  with done as (
    update public.training_jobs j
    set status = p.cluster_status::public.job_status,
        error_message = case when p.cluster_status = 'failed'
          then coalesce(p.error ->> 'message', 'The GPU cluster reported the job failed without a reason.')
          else j.error_message end,
        artifact_location = coalesce(p.artifact_uri, j.artifact_location),
        run_ended_at = coalesce(j.run_ended_at, now()),
        run_settled_at = now(),
        status_message = null,
        -- Ended at the cluster: there is nothing left to tell it.
        cancel_delivered_at = case when j.cancel_requested_at is not null
                                   then coalesce(j.cancel_delivered_at, now())
                                   else j.cancel_delivered_at end
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.outcome = 'ok' and not p.settling
      and p.cluster_status in ('completed', 'failed', 'cancelled')
      and j.status in ('initializing', 'running')
    returning j.status
  )
  select jsonb_build_object(
    'completed', count(*) filter (where status = 'completed'),
    'failed', count(*) filter (where status = 'failed'),
    'cancelled', count(*) filter (where status = 'cancelled'))
  from done
  into result;
  return result;
end;
$$;

-- The per-job budget (hyperparameters.max_cost): reaching it cancels the job, says why, and
-- leaves a cancel for the cluster to be delivered. Returns how many.
create function lora_private.polls_enforce_budget() returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  result integer;
begin
  with over as (
    update public.training_jobs j
    set status = 'cancelled',
        error_message = format('it reached its budget of $%s',
                               to_char((j.hyperparameters ->> 'max_cost')::numeric, 'FM999999990.0099'))
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.outcome = 'ok' and not p.settling
      and j.status = 'running'
      and jsonb_typeof(j.hyperparameters -> 'max_cost') = 'number'
      and j.current_cost >= (j.hyperparameters ->> 'max_cost')::numeric
    returning 1
  )
  select count(*)::integer from over
  into result;
  return result;
end;
$$;

-- Bills a job again from its run's times, after its run's end became known, and corrects its
-- one cost record to match.
create function lora_private.rebill_jobs(p_job_ids uuid[]) returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  with billed as (
    update public.training_jobs j
    set final_cost = public.job_billed_cost(j),
        current_cost = public.job_billed_cost(j)
    where j.id = any (p_job_ids) and j.status in ('completed', 'failed', 'cancelled')
    returning j.*
  )
  update public.cost_records c
  set amount = b.final_cost,
      details = c.details || jsonb_build_object(
        'started_at', i.billed_from,
        'completed_at', i.billed_to,
        'duration_seconds',
          case when i.billed_from is null then 0
               else greatest(extract(epoch from (i.billed_to - i.billed_from)), 0)::bigint end,
        'billed_from_run_times', true)
  from billed b
  cross join lateral public.job_billed_interval(b) i
  where c.job_id = b.id and c.cost_type = 'training_compute';
end;
$$;

-- Jobs that ended here while their run may have gone on. When the cluster reports the run ended,
-- the run is settled: billed from its own times, and where its end differs from the job's (it
-- completed although the job was cancelled or given up), the job says exactly that and keeps the
-- adapter's location; it is never silently left wrong. Until then it is polled again later.
-- A cluster that no longer knows the run (rejected) has nothing more to tell.
create function lora_private.polls_settle(p_poll_interval interval, p_backoff_max interval)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
  settled uuid[];
begin
  with ended as (
    update public.training_jobs j
    set run_ended_at = coalesce(j.run_ended_at, now()),
        run_settled_at = now(),
        artifact_location = coalesce(p.artifact_uri, j.artifact_location),
        error_message = case
          when p.cluster_status = 'completed' and j.status <> 'completed' then
            concat_ws(' ', j.error_message, format(
              'The run had in fact completed at the GPU cluster at %s%s; its adapter was kept%s.',
              to_char(coalesce(j.run_ended_at, now()) at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
              case when j.status = 'cancelled'
                        and coalesce(j.run_ended_at, now()) <= j.cancel_requested_at
                   then ', before the cancel reached it' else '' end,
              coalesce(' at ' || p.artifact_uri, '')))
          when p.cluster_status = 'failed' and j.status <> 'failed' then
            concat_ws(' ', j.error_message, format('The GPU cluster reports the run failed: %s.',
              coalesce(p.error ->> 'message', 'no reason given')))
          when p.cluster_status = 'failed' and p.error ->> 'message' is not null
               and j.error_message is distinct from p.error ->> 'message' then
            concat_ws(' ', j.error_message, format('The GPU cluster reports the run failed: %s.',
              p.error ->> 'message'))
          else j.error_message
        end,
        lease_owner = null,
        lease_expires_at = null,
        next_poll_at = null
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.settling and p.outcome = 'ok'
      and p.cluster_status in ('completed', 'failed', 'cancelled')
    returning j.id, j.status, j.user_id, j.dataset_id, p.cluster_status
  ),
  told as (
    insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
    select e.user_id, e.id, 'training_run_completed', 'The run had completed',
           format('Your LoRA training on "%s" had already completed at the GPU cluster, although '
                  'the job was %s; its adapter was kept.', d.name, e.status),
           'normal',
           jsonb_build_object('job_id', e.id, 'status', e.status, 'run_status', e.cluster_status),
           format('job:%s:run_completed', e.id)
    from ended e
    join public.datasets d on d.id = e.dataset_id
    where e.cluster_status = 'completed' and e.status <> 'completed'
    on conflict (dedupe_key) do nothing
  )
  select array_agg(id) into settled from ended;

  if settled is not null then
    perform lora_private.rebill_jobs(settled);
  end if;

  -- Still running at the cluster (a cancel takes effect at its next step), or no answer: ask
  -- again later, backing off while there is no answer.
  update public.training_jobs j
  set run_settled_at = case when p.outcome = 'rejected' then now() end,
      attempts = case when p.outcome = 'transient' then j.attempts + 1 else 0 end,
      next_poll_at = now() + case
        when p.outcome = 'transient'
          then least(p_poll_interval * power(2, least(j.attempts, 16)), p_backoff_max)
        else p_poll_interval end,
      lease_owner = null,
      lease_expires_at = null
  from pg_temp.processor_polls p
  where j.id = p.job_id and p.settling and j.run_settled_at is null
    and p.outcome in ('ok', 'transient', 'rejected');
end;
$$;

-- No answer from the cluster about an active job: contact is lost, which is not the job's
-- failure. The job says since when, the owner is told once, and polls back off (doubling from
-- the poll interval up to p_backoff_max). Only when contact has been lost for p_fail_after does
-- the job fail; its run may still be going, so a cancel is left to deliver, and the job keeps
-- being polled (settling) so that a run that finished anyway is told truthfully.
-- Returns how many jobs failed.
create function lora_private.polls_lost_contact(
  p_poll_interval interval,
  p_backoff_max interval,
  p_fail_after interval
) returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  n_failed integer;
begin
  with lost as (
    update public.training_jobs j
    set lost_contact_since = coalesce(j.lost_contact_since, now()),
        attempts = j.attempts + 1,
        next_poll_at = now() + least(p_poll_interval * power(2, least(j.attempts, 16)), p_backoff_max),
        lease_owner = null,
        lease_expires_at = null
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.outcome = 'transient' and not p.settling
      and j.status in ('initializing', 'running')
    returning j.*
  )
  insert into public.notifications (user_id, job_id, type, title, message, priority, metadata, dedupe_key)
  select l.user_id, l.id, 'training_lost_contact', 'Lost contact with the GPU cluster',
         format('The GPU cluster running your LoRA training on "%s" cannot be reached since %s. '
                'The training may well be going on; we keep trying.',
                d.name, to_char(l.lost_contact_since at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')),
         'high',
         jsonb_build_object('job_id', l.id, 'lost_contact_since', l.lost_contact_since),
         format('job:%s:lost_contact', l.id)
  from lost l
  join public.datasets d on d.id = l.dataset_id
  on conflict (dedupe_key) do nothing;

  with given_up as (
    update public.training_jobs j
    set status = 'failed',
        error_message = format(
          'Lost contact with the GPU cluster for %s (since %s; last error: %s). The job was given '
          'up and the cluster asked to stop its run; if the run finished anyway, this job will '
          'say so once the cluster answers.',
          justify_interval(date_trunc('second', now() - j.lost_contact_since)),
          to_char(j.lost_contact_since at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
          coalesce(p.message, 'no answer')),
        cancel_requested_at = now()
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.outcome = 'transient' and not p.settling
      and j.status in ('initializing', 'running')
      and j.lost_contact_since <= now() - p_fail_after
    returning 1
  )
  select count(*)::integer into n_failed from given_up;
  return n_failed;
end;
$$;

-- The cluster refuses to report on an active job (it does not know the run): that is final, and
-- there is no run left to stop or to settle. Returns how many.
create function lora_private.polls_fail_rejected() returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  result integer;
begin
  with failed as (
    update public.training_jobs j
    set status = 'failed',
        error_message = p.message,
        run_settled_at = now()
    from pg_temp.processor_polls p
    where j.id = p.job_id and p.outcome = 'rejected' and not p.settling
      and j.status in ('initializing', 'running')
    returning 1
  )
  select count(*)::integer from failed
  into result;
  return result;
end;
$$;

-- Jobs the cycle had no time for are due at once.
create function lora_private.polls_release_skipped() returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.training_jobs j
  set next_poll_at = now(),
      lease_owner = null,
      lease_expires_at = null
  from pg_temp.processor_polls p
  where j.id = p.job_id and p.outcome = 'skipped';
end;
$$;

-- --- record polls --------------------------------------------------------------------------------

-- p_results: [{job_id, outcome, message, status, progress, current_epoch, total_epochs,
--              current_step, total_steps, started_at, ended_at, metrics, history: [points],
--              error: {code, message}, artifact_uri}], outcome in processor_poll_outcomes().
create function public.processor_record_polls(
  p_owner uuid,
  p_results jsonb,
  p_poll_interval_seconds double precision,
  p_backoff_max_seconds double precision,
  p_stall_factor double precision,
  p_stall_min_seconds double precision,
  p_lost_contact_fail_seconds double precision
) returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  poll_interval interval := make_interval(secs => p_poll_interval_seconds);
  backoff_max interval := make_interval(secs => greatest(p_backoff_max_seconds, p_poll_interval_seconds));
  finished jsonb;
  n_ignored integer;
  n_budget integer;
  n_lost integer;
  n_rejected integer;
begin
  perform lora_private.require_outcomes(p_results, public.processor_poll_outcomes());

  -- Unpacked once into a table of its own and analysed, so the join below is planned on real
  -- numbers instead of re-reading the JSON for every job.
  create temp table processor_poll_input on commit drop as
  select * from jsonb_to_recordset(p_results) as r(
    job_id uuid, outcome text, message text, status text, progress numeric, current_epoch integer,
    total_epochs integer, current_step integer, total_steps integer, started_at timestamptz,
    ended_at timestamptz, metrics jsonb, history jsonb, error jsonb, artifact_uri text,
    status_message text);
  analyze pg_temp.processor_poll_input;

  -- Only the jobs whose lease this cycle still holds; locked until the transaction ends, so a
  -- concurrent cancel waits for this write and then sees it.
  create temp table processor_polls on commit drop as
  select r.job_id, r.outcome, r.message, r.status as cluster_status, r.progress, r.current_epoch,
         r.total_epochs, r.current_step, r.total_steps, r.started_at, r.ended_at, r.metrics,
         r.history, r.error, r.artifact_uri, r.status_message, j.status as old_status,
         j.current_step as old_step,
         public.job_status_is_terminal(j.status) as settling
  from pg_temp.processor_poll_input r
  join public.training_jobs j on j.id = r.job_id
  where j.lease_owner = p_owner
  for update of j;

  select jsonb_array_length(p_results) - count(*) into n_ignored from pg_temp.processor_polls;

  perform lora_private.polls_store_points();
  perform lora_private.polls_record_run_times();
  perform lora_private.polls_mark_running();
  perform lora_private.polls_record_progress(poll_interval);
  perform lora_private.polls_notify_milestones();
  perform lora_private.polls_mark_stalled(p_stall_factor, make_interval(secs => p_stall_min_seconds));
  finished := lora_private.polls_finish();
  n_budget := lora_private.polls_enforce_budget();
  perform lora_private.polls_settle(poll_interval, backoff_max);
  n_lost := lora_private.polls_lost_contact(
    poll_interval, backoff_max, make_interval(secs => p_lost_contact_fail_seconds));
  n_rejected := lora_private.polls_fail_rejected();
  perform lora_private.polls_release_skipped();

  drop table pg_temp.processor_polls;
  drop table pg_temp.processor_poll_input;
  return jsonb_build_object(
    'completed', (finished ->> 'completed')::integer,
    'failed', (finished ->> 'failed')::integer + n_lost + n_rejected,
    'cancelled', (finished ->> 'cancelled')::integer + n_budget,
    'budget_cancelled', n_budget,
    'lost_contact_failed', n_lost,
    'ignored', n_ignored
  );
end;
$$;

-- --- cancels to deliver --------------------------------------------------------------------------

-- Jobs whose cancel the cluster has not yet acknowledged: cancelled jobs, and jobs the processor
-- gave up on while their run may be going. Delivery is idempotent at the cluster, so two cycles
-- delivering the same cancel is harmless; no lease needed.
--
-- A job whose submission got no answer has no external id, yet the cluster may have started it:
-- such jobs come back with what a resubmission needs, so the processor can learn the external
-- id under the same idempotency key and stop the run. Jobs cancelled before any submission (no
-- idempotency key) never appear: the state machine marks their cancel delivered, there being
-- nothing to tell the cluster.
create function public.processor_pending_cancels(p_limit integer) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'job_id', j.id,
    'user_id', j.user_id,
    'external_job_id', j.external_job_id,
    'idempotency_key', j.idempotency_key,
    'hyperparameters', j.hyperparameters,
    'gpu_config', j.gpu_config,
    -- A resubmission to learn the run goes through the same checks as a submission.
    'hourly_rate', p.hourly_rate,
    'storage_bucket', d.storage_bucket,
    'storage_path', d.storage_path
  ) order by j.cancel_requested_at), '[]'::jsonb)
  from (
    select id, user_id, external_job_id, idempotency_key, hyperparameters, gpu_config,
           dataset_id, cancel_requested_at
    from public.training_jobs
    where cancel_requested_at is not null
      and cancel_delivered_at is null
      and (external_job_id is not null or idempotency_key is not null)
    order by cancel_requested_at
    limit p_limit
  ) j
  join public.datasets d on d.id = j.dataset_id
  left join public.gpu_prices p on p.gpu_type = j.gpu_config ->> 'gpu_type'
$$;

-- p_deliveries: [{job_id, external_job_id}] for cancels the cluster acknowledged (or that it
-- never needed); an external id learned while delivering is kept when the job had none. The
-- job is polled at once after, for its run's last points and how the run really ended (the
-- cluster may answer that it had already completed). Used by the processor and by cancel-job.
create function public.record_cancels_delivered(p_deliveries jsonb) returns integer
language sql
volatile
set search_path = ''
as $$
  with delivered as (
    update public.training_jobs j
    set cancel_delivered_at = now(),
        external_job_id = coalesce(j.external_job_id, r.external_job_id),
        next_poll_at = now()
    from jsonb_to_recordset(p_deliveries) as r(job_id uuid, external_job_id text)
    where j.id = r.job_id
      and j.cancel_delivered_at is null
    returning 1
  )
  select count(*)::integer from delivered
$$;

-- For results that could not be recorded with their batch, one statement for all of them
-- (p_failures: [{job_id, message}]): an active job fails with the message, and gets a cancel to
-- deliver since its run may be going; an ended job whose run was being settled stops being
-- asked about, its message saying why. Returns {failed, settled}: how many of each.
create function public.processor_fail_jobs(p_owner uuid, p_failures jsonb) returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  n_failed integer;
  n_settled integer;
begin
  with failed as (
    update public.training_jobs j
    set status = 'failed',
        error_message = r.message,
        cancel_requested_at = case
          when j.external_job_id is not null or j.idempotency_key is not null then now()
        end
    from jsonb_to_recordset(p_failures) as r(job_id uuid, message text)
    where j.id = r.job_id
      and j.lease_owner = p_owner
      and j.status in ('initializing', 'running')
    returning 1
  )
  select count(*)::integer into n_failed from failed;

  with settled as (
    update public.training_jobs j
    set run_settled_at = now(),
        error_message = concat_ws(' ', j.error_message, r.message),
        lease_owner = null,
        lease_expires_at = null
    from jsonb_to_recordset(p_failures) as r(job_id uuid, message text)
    where j.id = r.job_id
      and j.lease_owner = p_owner
      and j.status in ('completed', 'failed', 'cancelled')
    returning 1
  )
  select count(*)::integer into n_settled from settled;
  return jsonb_build_object('failed', n_failed, 'settled', n_settled);
end;
$$;

-- Releases the given jobs for a later cycle without counting anything against them.
-- p_job_ids: a JSON array of job ids (JSON, like every batch the processor sends).
create function public.processor_release_jobs(p_owner uuid, p_job_ids jsonb) returns integer
language sql
volatile
set search_path = ''
as $$
  with released as (
    update public.training_jobs j
    set lease_owner = null,
        lease_expires_at = null
    where j.id in (select value::uuid from jsonb_array_elements_text(p_job_ids))
      and j.lease_owner = p_owner
    returning 1
  )
  select count(*)::integer from released
$$;

revoke execute on all functions in schema lora_private from public, anon, authenticated;
grant execute on all functions in schema lora_private to service_role;

revoke execute on function
  public.processor_submission_outcomes(),
  public.processor_poll_outcomes(),
  public.processor_record_submissions(uuid, jsonb, integer),
  public.processor_claim_polls(uuid, integer, integer, double precision),
  public.processor_record_polls(uuid, jsonb, double precision, double precision, double precision,
                                double precision, double precision),
  public.processor_pending_cancels(integer),
  public.record_cancels_delivered(jsonb),
  public.processor_fail_jobs(uuid, jsonb),
  public.processor_release_jobs(uuid, jsonb)
from public, anon, authenticated;

grant execute on function
  public.processor_submission_outcomes(),
  public.processor_poll_outcomes(),
  public.processor_record_submissions(uuid, jsonb, integer),
  public.processor_claim_polls(uuid, integer, integer, double precision),
  public.processor_record_polls(uuid, jsonb, double precision, double precision, double precision,
                                double precision, double precision),
  public.processor_pending_cancels(integer),
  public.record_cancels_delivered(jsonb),
  public.processor_fail_jobs(uuid, jsonb),
  public.processor_release_jobs(uuid, jsonb)
to service_role;
