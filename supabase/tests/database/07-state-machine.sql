-- The job state machine, as the service role (it bypasses RLS, not the trigger): every allowed
-- transition and what entering a terminal state brings, then every refused transition (PT409,
-- exact message), and a new job that does not start as queued.
--
--   queued -> initializing -> running -> completed
--   cancelled from queued, initializing or running; failed from initializing or running
--   nothing leaves completed, failed or cancelled
begin;
create extension if not exists pgtap;
select plan(41);

-- Actors: tests.act_as_user(uuid), tests.act_as_anon(), tests.act_as_service_role(), from
-- 000-test-helpers.sql.

-- Fixtures, as the superuser: a user, a dataset, a priced GPU, and jobs, each named below by the
-- status it is in when the service role takes over.
insert into auth.users (id, email) values ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test');

insert into public.gpu_prices (gpu_type, hourly_rate) values ('pgtap-gpu', 1.5);

insert into public.datasets (id, user_id, name, storage_path) values
  ('da7a0000-0000-4000-8000-0000000a11ce', 'a11ce000-0000-4000-8000-000000000000', 'sm data', 'alice/data.jsonl');

insert into public.training_jobs (id, user_id, dataset_id, gpu_config)
select j.id::uuid, 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce',
       '{"gpu_type": "pgtap-gpu", "gpu_count": 4}'
from (values
  ('5a000000-0000-4000-8000-000000000001'),  -- queued: walks the happy path to completed
  ('5a000000-0000-4000-8000-000000000002'),  -- queued: cancelled
  ('5a000000-0000-4000-8000-000000000003'),  -- initializing: fails
  ('5a000000-0000-4000-8000-000000000004'),  -- initializing: cancelled
  ('5a000000-0000-4000-8000-000000000005'),  -- running: fails
  ('5a000000-0000-4000-8000-000000000006'),  -- running: cancelled
  ('5a000000-0000-4000-8000-0000000000a1'),  -- queued: refusals from queued
  ('5a000000-0000-4000-8000-0000000000a2'),  -- initializing: refusals from initializing
  ('5a000000-0000-4000-8000-0000000000a3')   -- running: refusals from running
) j (id);

update public.training_jobs set status = 'initializing'
  where id in ('5a000000-0000-4000-8000-000000000003', '5a000000-0000-4000-8000-000000000004',
               '5a000000-0000-4000-8000-000000000005', '5a000000-0000-4000-8000-000000000006',
               '5a000000-0000-4000-8000-0000000000a2', '5a000000-0000-4000-8000-0000000000a3');
update public.training_jobs set status = 'running', lease_owner = gen_random_uuid(),
                                lease_expires_at = now() + interval '5 minutes',
                                next_poll_at = now() + interval '30 seconds'
  where id in ('5a000000-0000-4000-8000-000000000005', '5a000000-0000-4000-8000-000000000006',
               '5a000000-0000-4000-8000-0000000000a3');

-- === Service role: allowed transitions ===========================================================
select tests.act_as_service_role();

select lives_ok(
  $$ update public.training_jobs set status = 'initializing' where id = '5a000000-0000-4000-8000-000000000001' $$,
  'queued -> initializing'
);

-- Started an hour ago by the cluster's clock, and leased by a processor.
select lives_ok(
  $$ update public.training_jobs
     set status = 'running', started_at = now() - interval '1 hour', lease_owner = gen_random_uuid(),
         lease_expires_at = now() + interval '5 minutes', next_poll_at = now() + interval '30 seconds'
     where id = '5a000000-0000-4000-8000-000000000001' $$,
  'initializing -> running'
);

select lives_ok(
  $$ update public.training_jobs set status = 'completed' where id = '5a000000-0000-4000-8000-000000000001' $$,
  'running -> completed'
);

select lives_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '5a000000-0000-4000-8000-000000000002' $$,
  'queued -> cancelled'
);

select lives_ok(
  $$ update public.training_jobs set status = 'failed', error_message = 'dataset unreadable'
     where id = '5a000000-0000-4000-8000-000000000003' $$,
  'initializing -> failed'
);

select lives_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '5a000000-0000-4000-8000-000000000004' $$,
  'initializing -> cancelled'
);

-- The processor knows the final cost from the cluster and writes it with the transition.
select lives_ok(
  $$ update public.training_jobs set status = 'failed', error_message = 'CUDA out of memory', final_cost = 1.23
     where id = '5a000000-0000-4000-8000-000000000005' $$,
  'running -> failed'
);

select lives_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '5a000000-0000-4000-8000-000000000006' $$,
  'running -> cancelled'
);

-- === Service role: what the transitions brought ==================================================

select results_eq(
  $$ select status::text, progress, started_at = now() - interval '1 hour', completed_at = now(),
            lease_owner, lease_expires_at, next_poll_at
     from public.training_jobs where id = '5a000000-0000-4000-8000-000000000001' $$,
  $$ values ('completed', 100::numeric, true, true, null::uuid, null::timestamptz, null::timestamptz) $$,
  'completed: progress 100, completed_at set, lease and next poll cleared'
);

select results_eq(
  $$ select status::text, started_at, completed_at = now(), cancel_requested_at = now(), lease_owner, next_poll_at
     from public.training_jobs where id = '5a000000-0000-4000-8000-000000000006' $$,
  $$ values ('cancelled', now(), true, true, null::uuid, null::timestamptz) $$,
  'running -> cancelled: started_at set on running, completed_at and cancel_requested_at set, lease cleared'
);

-- 1.50/h x 4 GPUs x 1 hour for the completed job; the failed one keeps the processor's figure; the
-- others never ran for any time.
select results_eq(
  $$ select id, final_cost, current_cost from public.training_jobs
     where id::text like '5a000000-0000-4000-8000-00000000000_' order by id $$,
  $$ values ('5a000000-0000-4000-8000-000000000001'::uuid, 6.0000::numeric, 6.0000::numeric),
            ('5a000000-0000-4000-8000-000000000002', 0, 0),
            ('5a000000-0000-4000-8000-000000000003', 0, 0),
            ('5a000000-0000-4000-8000-000000000004', 0, 0),
            ('5a000000-0000-4000-8000-000000000005', 1.23, 1.23),
            ('5a000000-0000-4000-8000-000000000006', 0, 0) $$,
  'terminal states: the final cost is the compute time, or what the writer set; the running cost stops there'
);

select results_eq(
  $$ select job_id, cost_type, amount, billing_period from public.cost_records
     where user_id = 'a11ce000-0000-4000-8000-000000000000' order by job_id $$,
  $$ values ('5a000000-0000-4000-8000-000000000001'::uuid, 'training_compute', 6.0000::numeric, to_char(now() at time zone 'UTC', 'YYYY-MM')),
            ('5a000000-0000-4000-8000-000000000002', 'training_compute', 0, to_char(now() at time zone 'UTC', 'YYYY-MM')),
            ('5a000000-0000-4000-8000-000000000003', 'training_compute', 0, to_char(now() at time zone 'UTC', 'YYYY-MM')),
            ('5a000000-0000-4000-8000-000000000004', 'training_compute', 0, to_char(now() at time zone 'UTC', 'YYYY-MM')),
            ('5a000000-0000-4000-8000-000000000005', 'training_compute', 1.23, to_char(now() at time zone 'UTC', 'YYYY-MM')),
            ('5a000000-0000-4000-8000-000000000006', 'training_compute', 0, to_char(now() at time zone 'UTC', 'YYYY-MM')) $$,
  'terminal states: exactly one compute cost record per finished job'
);

select results_eq(
  $$ select job_id, type, priority, dedupe_key from public.notifications
     where user_id = 'a11ce000-0000-4000-8000-000000000000' order by job_id $$,
  $$ values ('5a000000-0000-4000-8000-000000000001'::uuid, 'training_completed', 'normal', 'job:5a000000-0000-4000-8000-000000000001:completed'),
            ('5a000000-0000-4000-8000-000000000002', 'training_cancelled', 'normal', 'job:5a000000-0000-4000-8000-000000000002:cancelled'),
            ('5a000000-0000-4000-8000-000000000003', 'training_failed', 'high', 'job:5a000000-0000-4000-8000-000000000003:failed'),
            ('5a000000-0000-4000-8000-000000000004', 'training_cancelled', 'normal', 'job:5a000000-0000-4000-8000-000000000004:cancelled'),
            ('5a000000-0000-4000-8000-000000000005', 'training_failed', 'high', 'job:5a000000-0000-4000-8000-000000000005:failed'),
            ('5a000000-0000-4000-8000-000000000006', 'training_cancelled', 'normal', 'job:5a000000-0000-4000-8000-000000000006:cancelled') $$,
  'terminal states: exactly one notification per finished job'
);

select results_eq(
  $$ select message from public.notifications where job_id = '5a000000-0000-4000-8000-000000000005' $$,
  $$ values ('Your LoRA training on "sm data" failed: CUDA out of memory') $$,
  'failed: the notification says why'
);

-- Writing the status a job already has is no transition: nothing is charged or notified again.
select lives_ok(
  $$ update public.training_jobs set status = 'completed', artifact_location = 's3://adapters/5a01'
     where id = '5a000000-0000-4000-8000-000000000001' $$,
  'completed -> completed is no transition, and allowed'
);

select results_eq(
  $$ select (select count(*)::int from public.cost_records where job_id = '5a000000-0000-4000-8000-000000000001'),
            (select count(*)::int from public.notifications where job_id = '5a000000-0000-4000-8000-000000000001') $$,
  $$ values (1, 1) $$,
  'completed -> completed: still one cost record and one notification'
);

-- === Service role: refused transitions ===========================================================
-- One assertion per refused pair. A refused update changes nothing, so one job per status serves.

select throws_ok(
  format('update public.training_jobs set status = %L where id = %L', t.to_status, t.job_id),
  'PT409',
  case when t.from_status in ('completed', 'failed', 'cancelled')
    then format('training job %s is already %s; it cannot become %s', t.job_id, t.from_status, t.to_status)
    else format('training job %s cannot go from %s to %s', t.job_id, t.from_status, t.to_status)
  end,
  format('%s -> %s is refused', t.from_status, t.to_status)
)
from (values
  ('5a000000-0000-4000-8000-0000000000a1', 'queued', 'running'),
  ('5a000000-0000-4000-8000-0000000000a1', 'queued', 'completed'),
  ('5a000000-0000-4000-8000-0000000000a1', 'queued', 'failed'),
  ('5a000000-0000-4000-8000-0000000000a2', 'initializing', 'queued'),
  ('5a000000-0000-4000-8000-0000000000a2', 'initializing', 'completed'),
  ('5a000000-0000-4000-8000-0000000000a3', 'running', 'queued'),
  ('5a000000-0000-4000-8000-0000000000a3', 'running', 'initializing'),
  ('5a000000-0000-4000-8000-000000000001', 'completed', 'queued'),
  ('5a000000-0000-4000-8000-000000000001', 'completed', 'initializing'),
  ('5a000000-0000-4000-8000-000000000001', 'completed', 'running'),
  ('5a000000-0000-4000-8000-000000000001', 'completed', 'failed'),
  ('5a000000-0000-4000-8000-000000000001', 'completed', 'cancelled'),
  ('5a000000-0000-4000-8000-000000000003', 'failed', 'queued'),
  ('5a000000-0000-4000-8000-000000000003', 'failed', 'initializing'),
  ('5a000000-0000-4000-8000-000000000003', 'failed', 'running'),
  ('5a000000-0000-4000-8000-000000000003', 'failed', 'completed'),
  ('5a000000-0000-4000-8000-000000000003', 'failed', 'cancelled'),
  ('5a000000-0000-4000-8000-000000000002', 'cancelled', 'queued'),
  ('5a000000-0000-4000-8000-000000000002', 'cancelled', 'initializing'),
  ('5a000000-0000-4000-8000-000000000002', 'cancelled', 'running'),
  ('5a000000-0000-4000-8000-000000000002', 'cancelled', 'completed'),
  ('5a000000-0000-4000-8000-000000000002', 'cancelled', 'failed')
) t (job_id, from_status, to_status);

select results_eq(
  $$ select id, status::text from public.training_jobs
     where id::text like '5a000000-0000-4000-8000-0000000000a_' order by id $$,
  $$ values ('5a000000-0000-4000-8000-0000000000a1'::uuid, 'queued'),
            ('5a000000-0000-4000-8000-0000000000a2', 'initializing'),
            ('5a000000-0000-4000-8000-0000000000a3', 'running') $$,
  'refused transitions left the active jobs where they were'
);

-- === Service role: a new job starts as queued ====================================================

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id, status)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', 'initializing') $$,
  'PT409', 'a new training job must start as queued, not initializing',
  'a new job cannot start as initializing'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id, status)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', 'completed') $$,
  'PT409', 'a new training job must start as queued, not completed',
  'a new job cannot start as completed'
);

select * from finish();
rollback;
