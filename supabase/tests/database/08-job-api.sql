-- The job API's SQL operations (docs/architecture.md, "The HTTP API"), per actor: public.get_job_detail (one job with
-- its dataset, chart-ready metrics and costs; downsampled and sliced by step) and
-- public.cancel_training_job. Both run as their caller, so RLS decides: another user's job and a
-- missing one look alike (PT404, same message), anon may not call them at all.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
-- alice's jobs: ...a001 running with 1000 metrics points (steps 0..999, training loss
-- 10 - step/100, except a spike of 100 at step 500, a dip of -1 at step 250, and 9 at step 0 and 1
-- at step 999, so that the first and last points are no extremes of their shares), ...a002 queued
-- (alice cancels it), ...a003 completed (one compute cost record), ...a004 queued (left active for
-- the other actors; the service role cancels it).
-- bob's job: ...b001 queued.
begin;
create extension if not exists pgtap;
select plan(51);

-- Actors: tests.act_as_user(uuid), tests.act_as_anon(), tests.act_as_service_role(), from
-- 000-test-helpers.sql.

-- Fixtures, as the superuser.
insert into auth.users (id, email) values
  ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test'),
  ('b0b00000-0000-4000-8000-000000000000', 'bob@example.test');

insert into public.gpu_prices (gpu_type, hourly_rate) values ('pgtap-gpu', 1.5);

insert into public.datasets (id, user_id, name, storage_path) values
  ('da7a0000-0000-4000-8000-0000000a11ce', 'a11ce000-0000-4000-8000-000000000000', 'alice data', 'alice/data.jsonl'),
  ('da7a0000-0000-4000-8000-00000000b0b0', 'b0b00000-0000-4000-8000-000000000000', 'bob data', 'bob/data.jsonl');

insert into public.training_jobs (id, user_id, dataset_id, gpu_config)
select j.id::uuid, j.user_id::uuid, j.dataset_id::uuid, '{"gpu_type": "pgtap-gpu", "gpu_count": 2}'
from (values
  ('10b00000-0000-4000-8000-00000000a001', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce'),
  ('10b00000-0000-4000-8000-00000000a002', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce'),
  ('10b00000-0000-4000-8000-00000000a003', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce'),
  ('10b00000-0000-4000-8000-00000000a004', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce'),
  ('10b00000-0000-4000-8000-00000000b001', 'b0b00000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-00000000b0b0')
) j (id, user_id, dataset_id);

update public.training_jobs set status = 'initializing'
  where id in ('10b00000-0000-4000-8000-00000000a001', '10b00000-0000-4000-8000-00000000a003');
-- Processor bookkeeping the API must not show.
update public.training_jobs
  set status = 'running', started_at = now() - interval '1 hour', attempts = 1,
      idempotency_key = gen_random_uuid(), lease_owner = gen_random_uuid(),
      lease_expires_at = now() + interval '5 minutes', next_poll_at = now() + interval '30 seconds'
  where id in ('10b00000-0000-4000-8000-00000000a001', '10b00000-0000-4000-8000-00000000a003');
update public.training_jobs set status = 'completed'
  where id = '10b00000-0000-4000-8000-00000000a003';

insert into public.metrics_points (job_id, step, epoch, training_loss, learning_rate)
select '10b00000-0000-4000-8000-00000000a001', s, s / 100,
       case s when 500 then 100 when 250 then -1 when 0 then 9 when 999 then 1 else 10 - s / 100.0 end, 0.0002
from generate_series(0, 999) s;

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

-- --- get_job_detail: shape ---

select results_eq(
  $$ select array(select jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null)) order by 1) $$,
  $$ values (array['costs', 'dataset', 'job', 'metrics']) $$,
  'owner: get_job_detail returns job, dataset, metrics and costs'
);

select set_eq(
  $$ select jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null) -> 'job') $$,
  array['id', 'user_id', 'dataset_id', 'status', 'progress', 'current_epoch', 'total_epochs',
        'current_step', 'total_steps', 'current_metrics', 'hyperparameters', 'gpu_config',
        'estimated_total_cost', 'current_cost', 'final_cost', 'external_job_id', 'error_message',
        'artifact_location', 'estimated_completion_at', 'started_at', 'completed_at',
        'run_started_at', 'run_ended_at', 'last_progress_at', 'stalled_since',
        'lost_contact_since', 'status_message', 'cancel_requested_at', 'created_at',
        'updated_at'],
  'owner: the job object has exactly the API''s columns'
);

select is_empty(
  $$ select k from jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null) -> 'job') k
     where k in ('lease_owner', 'lease_expires_at', 'idempotency_key', 'attempts', 'next_poll_at',
                 'cancel_delivered_at') $$,
  'owner: no processor bookkeeping in the job object (listed: the leaked keys)'
);

select results_eq(
  $$ select d -> 'job' ->> 'id', d -> 'job' ->> 'status', d -> 'dataset' ->> 'id', d -> 'dataset' ->> 'name',
            d -> 'costs'
     from public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null) d $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001', 'running', 'da7a0000-0000-4000-8000-0000000a11ce',
             'alice data', '[]'::jsonb) $$,
  'owner: the running job, its dataset, and no costs yet'
);

select set_eq(
  $$ select jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 5000, null) -> 'metrics' -> 0) $$,
  array['step', 'epoch', 'training_loss', 'validation_loss', 'learning_rate', 'throughput',
        'gpu_utilization', 'gpu_memory', 'recorded_at'],
  'owner: a metrics point has the chart''s fields'
);

select results_eq(
  $$ select jsonb_array_length(c), c -> 0 ->> 'cost_type', (c -> 0 ->> 'amount')::numeric
     from (select public.get_job_detail('10b00000-0000-4000-8000-00000000a003', 500, null) -> 'costs' c) s $$,
  $$ values (1, 'training_compute', 3.0000::numeric) $$,
  'owner: the completed job carries its one compute cost record (1.50/h x 2 GPUs x 1 hour)'
);

-- --- get_job_detail: the series, whole and downsampled ---

select results_eq(
  $$ select array(select (p ->> 'step')::int
                  from jsonb_array_elements(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 5000, null) -> 'metrics') p) $$,
  $$ select array(select s from generate_series(0, 999) s) $$,
  'owner: with room for every point, all 1000 come back in step order'
);

select results_eq(
  $$ select (m -> 250 ->> 'training_loss')::float8, (m -> 500 ->> 'training_loss')::float8,
            (m -> 999 ->> 'learning_rate')::float8
     from (select public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 5000, null) -> 'metrics' m) s $$,
  $$ values (-1::float8, 100::float8, 0.0002::float8) $$,
  'owner: points carry their values'
);

-- (p ->> 'step')::int of each returned point, for the checks below.
create temp table owner_series (max_points int, since_step int, steps int[]) on commit drop;
grant all on owner_series to authenticated, service_role;
insert into owner_series
select mp, ss, array(select (p ->> 'step')::int
                     from jsonb_array_elements(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', mp, ss) -> 'metrics') p)
from (values (500, null::int), (10, null), (2, null), (500, 990), (10, 499), (500, 999)) v (mp, ss);

select ok(
  (select cardinality(steps) between 3 and 500 and steps[1] = 0 and steps[cardinality(steps)] = 999
   from owner_series where max_points = 500 and since_step is null),
  'owner: the default (500 points) downsamples 1000 points, keeping the first and the last'
);

select ok(
  (select cardinality(steps) <= 10 and steps[1] = 0 and steps[cardinality(steps)] = 999
   from owner_series where max_points = 10 and since_step is null),
  'owner: max 10 points gives at most 10, the first and the last among them'
);

select ok(
  (select steps @> array[250, 500] from owner_series where max_points = 10 and since_step is null),
  'owner: max 10 points keeps the dip (step 250) and the spike (step 500)'
);

select ok(
  (select steps = (select array_agg(s order by s) from (select distinct unnest(steps) s) d)
   from owner_series where max_points = 10 and since_step is null),
  'owner: a downsampled series is in step order, without repeats'
);

select results_eq(
  $$ select steps from owner_series where max_points = 2 and since_step is null $$,
  $$ values (array[0, 999]) $$,
  'owner: max 2 points gives exactly the first and the last'
);

select results_eq(
  $$ select steps from owner_series where max_points = 500 and since_step = 990 $$,
  $$ values (array[991, 992, 993, 994, 995, 996, 997, 998, 999]) $$,
  'owner: since_step 990 returns only the points after step 990'
);

select ok(
  (select cardinality(steps) <= 10 and steps[1] = 500 and steps[cardinality(steps)] = 999
   from owner_series where max_points = 10 and since_step = 499),
  'owner: since_step 499, max 10: at most 10 points, from step 500 to the last'
);

select results_eq(
  $$ select steps from owner_series where max_points = 500 and since_step = 999 $$,
  $$ values ('{}'::int[]) $$,
  'owner: since_step at the last step returns no points'
);

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 1, null) $$,
  'PT400', 'max_points must be a whole number from 2 to 5000.',
  'owner: max_points below 2 is refused'
);

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 5001, null) $$,
  'PT400', 'max_points must be a whole number from 2 to 5000.',
  'owner: max_points above 5000 is refused'
);

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-0000deadbeef', 500, null) $$,
  'PT404', 'No such training job, or it is not yours.',
  'owner: a missing job is PT404'
);

-- --- cancel_training_job ---

select results_eq(
  $$ select j ->> 'id', j ->> 'status', j ? 'lease_owner' or j ? 'idempotency_key' or j ? 'attempts'
     from public.cancel_training_job('10b00000-0000-4000-8000-00000000a002') j $$,
  $$ values ('10b00000-0000-4000-8000-00000000a002', 'cancelled', false) $$,
  'owner: cancels their queued job and gets it back as the API shows it'
);

select results_eq(
  $$ select status::text, completed_at = now(), cancel_requested_at = now()
     from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a002' $$,
  $$ values ('cancelled', true, true) $$,
  'owner: the job is cancelled, completed_at and cancel_requested_at set'
);

select results_eq(
  $$ select count(*)::int, min(cost_type), min(amount) from public.cost_records
     where job_id = '10b00000-0000-4000-8000-00000000a002' $$,
  $$ values (1, 'training_compute', 0::numeric) $$,
  'owner: the cancel wrote exactly one compute cost record (never ran: 0)'
);

select results_eq(
  $$ select count(*)::int, min(type), min(user_id::text) from public.notifications
     where job_id = '10b00000-0000-4000-8000-00000000a002' $$,
  $$ values (1, 'training_cancelled', 'a11ce000-0000-4000-8000-000000000000') $$,
  'owner: the cancel wrote exactly one notification, to the owner'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000a002') $$,
  'PT409', 'This training job is already cancelled; it can no longer be cancelled.',
  'owner: cancelling again is PT409, naming the status'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000a003') $$,
  'PT409', 'This training job is already completed; it can no longer be cancelled.',
  'owner: cancelling a completed job is PT409, naming the status'
);

select results_eq(
  $$ select (select count(*)::int from public.cost_records where job_id = '10b00000-0000-4000-8000-00000000a002'),
            (select count(*)::int from public.notifications where job_id = '10b00000-0000-4000-8000-00000000a002'),
            (select status::text from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a003') $$,
  $$ values (1, 1, 'completed') $$,
  'owner: the refused cancels wrote nothing and left the completed job completed'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-0000deadbeef') $$,
  'PT404', 'No such training job, or it is not yours.',
  'owner: cancelling a missing job is PT404'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null) $$,
  'PT404', 'No such training job, or it is not yours.',
  'another user: get_job_detail on alice''s job is PT404'
);

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-0000deadbeef', 500, null) $$,
  'PT404', 'No such training job, or it is not yours.',
  'another user: get_job_detail on a missing job is the same PT404'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000a004') $$,
  'PT404', 'No such training job, or it is not yours.',
  'another user: cancelling alice''s active job is PT404'
);

-- Not PT409: that would tell bob the job exists and how it ended.
select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000a003') $$,
  'PT404', 'No such training job, or it is not yours.',
  'another user: cancelling alice''s completed job is PT404, not PT409'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-0000deadbeef') $$,
  'PT404', 'No such training job, or it is not yours.',
  'another user: cancelling a missing job is the same PT404'
);

select results_eq(
  $$ select d -> 'job' ->> 'user_id', d -> 'dataset' ->> 'name', d -> 'metrics'
     from public.get_job_detail('10b00000-0000-4000-8000-00000000b001', 500, null) d $$,
  $$ values ('b0b00000-0000-4000-8000-000000000000', 'bob data', '[]'::jsonb) $$,
  'another user: get_job_detail on their own job works'
);

reset role;

select results_eq(
  $$ select status::text, cancel_requested_at from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000a004' $$,
  $$ values ('queued', null::timestamptz) $$,
  'another user: alice''s job is still queued'
);

select is_empty(
  $$ select from public.notifications where job_id = '10b00000-0000-4000-8000-00000000a004'
     union all
     select from public.cost_records where job_id = '10b00000-0000-4000-8000-00000000a004' $$,
  'another user: the refused cancel wrote no cost record or notification'
);

-- === Anonymous ===================================================================================
select tests.act_as_anon();

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null) $$,
  '42501', 'permission denied for function get_job_detail',
  'anon: cannot call get_job_detail'
);

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 10, 0) $$,
  '42501', 'permission denied for function get_job_detail',
  'anon: cannot call get_job_detail with every argument either'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000a004') $$,
  '42501', 'permission denied for function cancel_training_job',
  'anon: cannot call cancel_training_job'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-0000deadbeef') $$,
  '42501', 'permission denied for function cancel_training_job',
  'anon: a missing job is refused the same way'
);

reset role;

select results_eq(
  $$ select status::text from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a004' $$,
  $$ values ('queued') $$,
  'anon: alice''s job is still queued'
);

-- === Service role ================================================================================
select tests.act_as_service_role();

select results_eq(
  $$ select d -> 'job' ->> 'user_id', d -> 'dataset' ->> 'id', jsonb_array_length(d -> 'metrics')
     from public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 5000, null) d $$,
  $$ values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', 1000) $$,
  'service role: get_job_detail returns any user''s job with all its points'
);

select is_empty(
  $$ select k from jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 500, null) -> 'job') k
     where k in ('lease_owner', 'lease_expires_at', 'idempotency_key', 'attempts', 'next_poll_at',
                 'cancel_delivered_at') $$,
  'service role: the job object has no processor bookkeeping either'
);

select results_eq(
  $$ select array(select (p ->> 'step')::int
                  from jsonb_array_elements(public.get_job_detail('10b00000-0000-4000-8000-00000000a001', 2, null) -> 'metrics') p) $$,
  $$ values (array[0, 999]) $$,
  'service role: downsamples the same way'
);

select throws_ok(
  $$ select public.get_job_detail('10b00000-0000-4000-8000-0000deadbeef', 500, null) $$,
  'PT404', 'No such training job, or it is not yours.',
  'service role: a missing job is PT404'
);

select results_eq(
  $$ select j ->> 'status' from public.cancel_training_job('10b00000-0000-4000-8000-00000000a004') j $$,
  $$ values ('cancelled') $$,
  'service role: cancels any user''s active job'
);

select results_eq(
  $$ select (select count(*)::int from public.cost_records where job_id = '10b00000-0000-4000-8000-00000000a004'),
            (select count(*)::int from public.notifications where job_id = '10b00000-0000-4000-8000-00000000a004') $$,
  $$ values (1, 1) $$,
  'service role: that cancel wrote one cost record and one notification'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000a004') $$,
  'PT409', 'This training job is already cancelled; it can no longer be cancelled.',
  'service role: cancelling it again is PT409'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-0000deadbeef') $$,
  'PT404', 'No such training job, or it is not yours.',
  'service role: cancelling a missing job is PT404'
);

-- === Grants ======================================================================================
reset role;

select ok(
  not has_function_privilege('anon', 'public.get_job_detail(uuid, integer, integer)', 'execute')
  and not has_function_privilege('anon', 'public.cancel_training_job(uuid)', 'execute'),
  'anon holds EXECUTE on neither API function'
);

select ok(
  has_function_privilege('authenticated', 'public.get_job_detail(uuid, integer, integer)', 'execute')
  and has_function_privilege('authenticated', 'public.cancel_training_job(uuid)', 'execute'),
  'authenticated holds EXECUTE on both API functions'
);

select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.oid in ('public.get_job_detail(uuid, integer, integer)'::regprocedure,
                     'public.cancel_training_job(uuid)'::regprocedure)
       and p.prosecdef $$,
  'both API functions are SECURITY INVOKER, so RLS decides (listed: those that are not)'
);

select * from finish();
rollback;
