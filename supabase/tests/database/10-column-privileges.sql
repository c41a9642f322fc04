-- Column privileges on training_jobs (migration 20261202000100): a signed-in user reads the
-- user-facing columns of their own jobs and none of the processor's bookkeeping, however they
-- ask (naming the column, the whole row, a filter, RETURNING); the job API still works, and shows
-- every user-facing column it lists.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
-- alice's jobs: ...c001 failed, with every column set (bookkeeping included); ...c002 queued (she
-- cancels it through the Data API); ...c003 running (she cancels it through the job API).
begin;
create extension if not exists pgtap;
select plan(23);

insert into auth.users (id, email) values
  ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test'),
  ('b0b00000-0000-4000-8000-000000000000', 'bob@example.test');

insert into public.gpu_prices (gpu_type, hourly_rate) values ('pgtap-gpu', 1.5);

insert into public.datasets (id, user_id, name, storage_path) values
  ('da7a0000-0000-4000-8000-0000000a11ce', 'a11ce000-0000-4000-8000-000000000000', 'alice data', 'alice/data.jsonl');

insert into public.training_jobs (id, user_id, dataset_id, gpu_config)
select j.id::uuid, 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce',
       '{"gpu_type": "pgtap-gpu", "gpu_count": 1}'
from (values ('10b00000-0000-4000-8000-00000000c001'), ('10b00000-0000-4000-8000-00000000c002'),
             ('10b00000-0000-4000-8000-00000000c003')) j (id);

update public.training_jobs set status = 'initializing', idempotency_key = gen_random_uuid()
  where id in ('10b00000-0000-4000-8000-00000000c001', '10b00000-0000-4000-8000-00000000c003');
update public.training_jobs set status = 'running', started_at = now() - interval '1 hour'
  where id in ('10b00000-0000-4000-8000-00000000c001', '10b00000-0000-4000-8000-00000000c003');
update public.training_jobs set status = 'failed', error_message = 'out of memory'
  where id = '10b00000-0000-4000-8000-00000000c001';
-- Every other column of c001, the bookkeeping included (the failure cleared the lease).
update public.training_jobs
  set attempts = 2, lease_owner = gen_random_uuid(), lease_expires_at = now() + interval '5 minutes',
      next_poll_at = now() + interval '30 seconds', cancel_delivered_at = now(),
      total_epochs = 3, total_steps = 300, estimated_total_cost = 4.5,
      external_job_id = 'pgtap-ext-c001', artifact_location = 's3://adapters/c001',
      estimated_completion_at = now() + interval '1 hour',
      run_started_at = now() - interval '59 minutes', run_ended_at = now(),
      last_progress_at = now(), stalled_since = now(), lost_contact_since = now(),
      status_message = 'Waiting for 1 A100 at the cluster.',
      cancel_requested_at = now()
  where id = '10b00000-0000-4000-8000-00000000c001';

-- === The grant ===================================================================================

select set_eq(
  $$ select a.attname::text
     from pg_attribute a
     where a.attrelid = 'public.training_jobs'::regclass and a.attnum > 0 and not a.attisdropped
       and has_column_privilege('authenticated', a.attrelid, a.attnum, 'select') $$,
  array['id', 'user_id', 'dataset_id', 'status', 'progress', 'current_epoch', 'total_epochs',
        'current_step', 'total_steps', 'current_metrics', 'hyperparameters', 'gpu_config',
        'estimated_total_cost', 'current_cost', 'final_cost', 'external_job_id', 'error_message',
        'artifact_location', 'estimated_completion_at', 'started_at', 'completed_at',
        'run_started_at', 'run_ended_at', 'last_progress_at', 'stalled_since',
        'lost_contact_since', 'status_message', 'cancel_requested_at', 'created_at',
        'updated_at'],
  'authenticated may read exactly the user-facing columns of training_jobs'
);

select ok(
  not has_table_privilege('authenticated', 'public.training_jobs', 'select'),
  'authenticated has no table-wide SELECT on training_jobs (so a new column starts closed)'
);

select ok(
  not has_any_column_privilege('anon', 'public.training_jobs', 'select'),
  'anon may read no column of training_jobs'
);

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select results_eq(
  $$ select id, status::text, external_job_id, artifact_location, run_started_at is not null,
            stalled_since is not null, lost_contact_since is not null, cancel_requested_at is not null
     from public.training_jobs order by id $$,
  $$ values ('10b00000-0000-4000-8000-00000000c001'::uuid, 'failed', 'pgtap-ext-c001',
             's3://adapters/c001', true, true, true, true),
            ('10b00000-0000-4000-8000-00000000c002'::uuid, 'queued', null, null, false, false,
             false, false),
            ('10b00000-0000-4000-8000-00000000c003'::uuid, 'running', null, null, false, false,
             false, false) $$,
  'owner: reads the user-facing columns of their jobs through the Data API'
);

select throws_ok(
  format('select %I from public.training_jobs', column_name),
  '42501', 'permission denied for table training_jobs',
  format('owner: cannot read %s', column_name)
)
from unnest(array['idempotency_key', 'attempts', 'lease_owner', 'lease_expires_at',
                  'next_poll_at', 'cancel_delivered_at']) as column_name;

select throws_ok(
  $$ select * from public.training_jobs $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot read the whole row with select *'
);

select throws_ok(
  $$ select to_jsonb(j) from public.training_jobs j $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot read the whole row as a row value'
);

select throws_ok(
  $$ select id from public.training_jobs where attempts > 1 $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot probe a bookkeeping column through a filter'
);

select throws_ok(
  $$ update public.training_jobs set status = 'cancelled'
     where id = '10b00000-0000-4000-8000-00000000c002' returning lease_owner $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot read a bookkeeping column through the cancel''s RETURNING'
);

select results_eq(
  $$ with u as (update public.training_jobs set status = 'cancelled'
                where id = '10b00000-0000-4000-8000-00000000c002' returning id, status::text)
     select * from u $$,
  $$ values ('10b00000-0000-4000-8000-00000000c002'::uuid, 'cancelled') $$,
  'owner: the cancel update itself still works, returning user-facing columns'
);

-- The job API's functions run as the caller and read the row through the granted columns.

select is(
  (select count(*)::int
   from jsonb_each(public.get_job_detail('10b00000-0000-4000-8000-00000000c001', 500, null) -> 'job') e
   where e.value = 'null'::jsonb),
  0,
  'owner: get_job_detail shows every user-facing column (none left NULL by the grant)'
);

select is_empty(
  $$ select k from jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000c001', 500, null) -> 'job') k
     where k in ('idempotency_key', 'attempts', 'lease_owner', 'lease_expires_at',
                 'next_poll_at', 'cancel_delivered_at') $$,
  'owner: get_job_detail shows no bookkeeping'
);

select set_eq(
  $$ select jsonb_object_keys(public.get_training_job('10b00000-0000-4000-8000-00000000c001')) $$,
  $$ select jsonb_object_keys(public.get_job_detail('10b00000-0000-4000-8000-00000000c001', 500, null) -> 'job') $$,
  'owner: get_training_job answers the job as get_job_detail shows it'
);

select is(
  public.cancel_training_job('10b00000-0000-4000-8000-00000000c003') ->> 'status',
  'cancelled',
  'owner: cancel_training_job cancels their running job'
);

select throws_ok(
  $$ select public.cancel_training_job('10b00000-0000-4000-8000-00000000c003') $$,
  'PT409', 'This training job is already cancelled; it can no longer be cancelled.',
  'owner: a second cancel is told the job''s status'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select is(
  (lora_private.visible_training_job('10b00000-0000-4000-8000-00000000c001')).id,
  null,
  'another user: alice''s job reads as nothing'
);

select is(
  public.get_training_job('10b00000-0000-4000-8000-00000000c001'),
  null,
  'another user: get_training_job answers NULL for alice''s job'
);

-- === Service role ================================================================================
reset role;
select tests.act_as_service_role();

select results_eq(
  $$ select attempts, lease_owner is not null, external_job_id from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000c001' $$,
  $$ values (2, true, 'pgtap-ext-c001') $$,
  'service role: still reads the bookkeeping'
);

select * from finish();
rollback;
