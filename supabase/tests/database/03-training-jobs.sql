-- training_jobs: owners read their jobs and may cancel an active one (status -> cancelled and
-- nothing else); other users and anon get nothing; the service role does everything, within the
-- state machine. Also public.get_training_job, which runs as its caller.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
-- alice's jobs: ...a001 queued, ...a002 initializing, ...a003 running (2 x pgtap-gpu at 1.50/h,
-- started 2 hours ago), ...a004 completed, ...a005 queued (left active for the other actors).
-- bob's job: ...b001 queued.
begin;
create extension if not exists pgtap;
select plan(41);

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

insert into public.training_jobs (id, user_id, dataset_id, gpu_config) values
  ('10b00000-0000-4000-8000-00000000a001', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', default),
  ('10b00000-0000-4000-8000-00000000a002', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', default),
  ('10b00000-0000-4000-8000-00000000a003', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce',
   '{"gpu_type": "pgtap-gpu", "gpu_count": 2}'),
  ('10b00000-0000-4000-8000-00000000a004', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', default),
  ('10b00000-0000-4000-8000-00000000a005', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', default),
  ('10b00000-0000-4000-8000-00000000b001', 'b0b00000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-00000000b0b0', default);

update public.training_jobs set status = 'initializing'
  where id in ('10b00000-0000-4000-8000-00000000a002', '10b00000-0000-4000-8000-00000000a003',
               '10b00000-0000-4000-8000-00000000a004');
update public.training_jobs set status = 'running', started_at = now() - interval '2 hours'
  where id in ('10b00000-0000-4000-8000-00000000a003', '10b00000-0000-4000-8000-00000000a004');
update public.training_jobs set status = 'completed'
  where id = '10b00000-0000-4000-8000-00000000a004';

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select set_eq(
  $$ select id from public.training_jobs $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid), ('10b00000-0000-4000-8000-00000000a002'),
            ('10b00000-0000-4000-8000-00000000a003'), ('10b00000-0000-4000-8000-00000000a004'),
            ('10b00000-0000-4000-8000-00000000a005') $$,
  'owner: sees exactly their own jobs'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce') $$,
  '23514', 'The dataset "alice data" is not ready for training yet.',
  'owner: cannot create a job on a dataset that is not ready (job creation has its own file)'
);

select throws_ok(
  $$ delete from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot delete a job'
);

select throws_ok(
  $$ update public.training_jobs set progress = 100 where id = '10b00000-0000-4000-8000-00000000a003' $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot change progress'
);

select throws_ok(
  $$ update public.training_jobs set current_cost = 0 where id = '10b00000-0000-4000-8000-00000000a003' $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot change the running cost'
);

select throws_ok(
  $$ update public.training_jobs set status = 'cancelled', final_cost = 0
     where id = '10b00000-0000-4000-8000-00000000a003' $$,
  '42501', 'permission denied for table training_jobs',
  'owner: cannot set their own final cost while cancelling'
);

-- Transitions the state machine allows (the processor makes them) but the owner may not.
select throws_ok(
  $$ update public.training_jobs set status = 'initializing' where id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'new row violates row-level security policy for table "training_jobs"',
  'owner: cannot move a queued job to initializing'
);

select throws_ok(
  $$ update public.training_jobs set status = 'running' where id = '10b00000-0000-4000-8000-00000000a002' $$,
  '42501', 'new row violates row-level security policy for table "training_jobs"',
  'owner: cannot move an initializing job to running'
);

select throws_ok(
  $$ update public.training_jobs set status = 'completed' where id = '10b00000-0000-4000-8000-00000000a003' $$,
  '42501', 'new row violates row-level security policy for table "training_jobs"',
  'owner: cannot complete a running job'
);

select results_eq(
  $$ with u as (update public.training_jobs set status = 'cancelled'
                where id = '10b00000-0000-4000-8000-00000000a004' returning 1)
     select count(*)::int from u $$,
  $$ values (0) $$,
  'owner: cancelling a completed job updates no row'
);

select results_eq(
  $$ select status::text from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a004' $$,
  $$ values ('completed') $$,
  'owner: the completed job is still completed'
);

select lives_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '10b00000-0000-4000-8000-00000000a001' $$,
  'owner: cancels their queued job'
);

select lives_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '10b00000-0000-4000-8000-00000000a002' $$,
  'owner: cancels their initializing job'
);

select lives_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '10b00000-0000-4000-8000-00000000a003' $$,
  'owner: cancels their running job'
);

select results_eq(
  $$ select id, status::text, completed_at = now() from public.training_jobs
     where id in ('10b00000-0000-4000-8000-00000000a001', '10b00000-0000-4000-8000-00000000a002',
                  '10b00000-0000-4000-8000-00000000a003')
     order by id $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid, 'cancelled', true),
            ('10b00000-0000-4000-8000-00000000a002', 'cancelled', true),
            ('10b00000-0000-4000-8000-00000000a003', 'cancelled', true) $$,
  'owner: the cancelled jobs are cancelled, with completed_at set by the trigger'
);

-- 1.50/h x 2 GPUs x 2 hours.
select results_eq(
  $$ select final_cost, current_cost from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000a003' $$,
  $$ values (6.0000::numeric, 6.0000::numeric) $$,
  'owner: the cancelled running job got its final cost from its compute time'
);

select results_eq(
  $$ select cost_type, amount from public.cost_records
     where job_id = '10b00000-0000-4000-8000-00000000a003' $$,
  $$ values ('training_compute', 6.0000::numeric) $$,
  'owner: the cancel created exactly one compute cost record, which the owner can read'
);

select results_eq(
  $$ select type, user_id from public.notifications
     where job_id = '10b00000-0000-4000-8000-00000000a003' $$,
  $$ values ('training_cancelled', 'a11ce000-0000-4000-8000-000000000000'::uuid) $$,
  'owner: the cancel created exactly one notification, which the owner can read'
);

select is(
  public.get_training_job('10b00000-0000-4000-8000-00000000a005') ->> 'id',
  '10b00000-0000-4000-8000-00000000a005',
  'owner: get_training_job returns their job'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select results_eq(
  $$ select id from public.training_jobs $$,
  $$ values ('10b00000-0000-4000-8000-00000000b001'::uuid) $$,
  'another user: sees only their own job, none of alice''s'
);

select is(
  public.get_training_job('10b00000-0000-4000-8000-00000000a005'),
  null,
  'another user: get_training_job returns NULL for alice''s job'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce') $$,
  '42501', 'user_id must be your own user id (or left out): a training job is always created for the signed-in user.',
  'another user: cannot create a job for alice'
);

select results_eq(
  $$ with u as (update public.training_jobs set status = 'cancelled'
                where id = '10b00000-0000-4000-8000-00000000a005' returning 1)
     select count(*)::int from u $$,
  $$ values (0) $$,
  'another user: cancelling alice''s job updates no row'
);

select throws_ok(
  $$ delete from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a005' $$,
  '42501', 'permission denied for table training_jobs',
  'another user: cannot delete alice''s job'
);

reset role;

select results_eq(
  $$ select status::text, completed_at from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000a005' $$,
  $$ values ('queued', null::timestamptz) $$,
  'another user: alice''s job is still queued'
);

-- === Anonymous ===================================================================================
select tests.act_as_anon();

select throws_ok(
  $$ select * from public.training_jobs $$,
  '42501', 'permission denied for table training_jobs',
  'anon: cannot read jobs'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce') $$,
  '42501', 'permission denied for table training_jobs',
  'anon: cannot create a job'
);

select throws_ok(
  $$ update public.training_jobs set status = 'cancelled' where id = '10b00000-0000-4000-8000-00000000a005' $$,
  '42501', 'permission denied for table training_jobs',
  'anon: cannot cancel a job'
);

select throws_ok(
  $$ delete from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a005' $$,
  '42501', 'permission denied for table training_jobs',
  'anon: cannot delete a job'
);

select throws_ok(
  $$ select public.get_training_job('10b00000-0000-4000-8000-00000000a005') $$,
  '42501', 'permission denied for function get_training_job',
  'anon: cannot call get_training_job'
);

-- === Service role ================================================================================
reset role;
select tests.act_as_service_role();

select set_eq(
  $$ select id from public.training_jobs
     where user_id in ('a11ce000-0000-4000-8000-000000000000', 'b0b00000-0000-4000-8000-000000000000') $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid), ('10b00000-0000-4000-8000-00000000a002'),
            ('10b00000-0000-4000-8000-00000000a003'), ('10b00000-0000-4000-8000-00000000a004'),
            ('10b00000-0000-4000-8000-00000000a005'), ('10b00000-0000-4000-8000-00000000b001') $$,
  'service role: sees every user''s jobs'
);

select is(
  public.get_training_job('10b00000-0000-4000-8000-00000000b001') ->> 'user_id',
  'b0b00000-0000-4000-8000-000000000000',
  'service role: get_training_job returns any user''s job'
);

select lives_ok(
  $$ insert into public.training_jobs (id, user_id, dataset_id)
     values ('10b00000-0000-4000-8000-00000000b002', 'b0b00000-0000-4000-8000-000000000000',
             'da7a0000-0000-4000-8000-00000000b0b0') $$,
  'service role: creates a job'
);

select results_eq(
  $$ select status::text from public.training_jobs where id = '10b00000-0000-4000-8000-00000000b002' $$,
  $$ values ('queued') $$,
  'service role: the new job is queued'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id, status)
     values ('b0b00000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-00000000b0b0', 'running') $$,
  'PT409', 'a new training job must start as queued, not running',
  'service role: cannot create a job in another status than queued'
);

select results_eq(
  $$ with u as (update public.training_jobs
                set status = 'initializing', external_job_id = 'pgtap-ext-a005', attempts = 1
                where id = '10b00000-0000-4000-8000-00000000a005' returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'service role: updates any column of a user''s job'
);

select results_eq(
  $$ select status::text, external_job_id, attempts from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000a005' $$,
  $$ values ('initializing', 'pgtap-ext-a005', 1) $$,
  'service role: the update is stored'
);

select throws_ok(
  $$ update public.training_jobs set status = 'running' where id = '10b00000-0000-4000-8000-00000000a004' $$,
  'PT409', 'training job 10b00000-0000-4000-8000-00000000a004 is already completed; it cannot become running',
  'service role: cannot move a completed job'
);

select throws_ok(
  $$ update public.training_jobs set status = 'completed' where id = '10b00000-0000-4000-8000-00000000a005' $$,
  'PT409', 'training job 10b00000-0000-4000-8000-00000000a005 cannot go from initializing to completed',
  'service role: cannot skip running'
);

select results_eq(
  $$ with d as (delete from public.training_jobs where id = '10b00000-0000-4000-8000-00000000b002' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a job'
);

select is_empty(
  $$ select from public.training_jobs where id = '10b00000-0000-4000-8000-00000000b002' $$,
  'service role: the deleted job is gone'
);

select * from finish();
rollback;
