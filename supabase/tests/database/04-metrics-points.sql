-- metrics_points: the owner of a job reads its metrics and writes none (the processor stores
-- them); other users and anon get nothing; the service role does everything.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
-- Jobs: alice's 10b00000-...-a001 with steps 10, 20, 30; bob's 10b00000-...-b001 with step 10.
begin;
create extension if not exists pgtap;
select plan(19);

-- Actors: tests.act_as_user(uuid), tests.act_as_anon(), tests.act_as_service_role(), from
-- 000-test-helpers.sql.

-- Fixtures, as the superuser.
insert into auth.users (id, email) values
  ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test'),
  ('b0b00000-0000-4000-8000-000000000000', 'bob@example.test');

insert into public.datasets (id, user_id, name, storage_path) values
  ('da7a0000-0000-4000-8000-0000000a11ce', 'a11ce000-0000-4000-8000-000000000000', 'alice data', 'alice/data.jsonl'),
  ('da7a0000-0000-4000-8000-00000000b0b0', 'b0b00000-0000-4000-8000-000000000000', 'bob data', 'bob/data.jsonl');

insert into public.training_jobs (id, user_id, dataset_id) values
  ('10b00000-0000-4000-8000-00000000a001', 'a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce'),
  ('10b00000-0000-4000-8000-00000000b001', 'b0b00000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-00000000b0b0');

insert into public.metrics_points (job_id, step, epoch, training_loss, gpu_utilization) values
  ('10b00000-0000-4000-8000-00000000a001', 10, 0, 2.0, 90),
  ('10b00000-0000-4000-8000-00000000a001', 20, 0, 1.5, 91),
  ('10b00000-0000-4000-8000-00000000a001', 30, 1, 1.2, 92),
  ('10b00000-0000-4000-8000-00000000b001', 10, 0, 2.5, 80);

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select results_eq(
  $$ select job_id, step, training_loss from public.metrics_points order by job_id, step $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid, 10, 2.0::float8),
            ('10b00000-0000-4000-8000-00000000a001', 20, 1.5),
            ('10b00000-0000-4000-8000-00000000a001', 30, 1.2) $$,
  'owner: sees exactly the metrics of their own job'
);

select throws_ok(
  $$ insert into public.metrics_points (job_id, step, training_loss)
     values ('10b00000-0000-4000-8000-00000000a001', 40, 0.1) $$,
  '42501', 'permission denied for table metrics_points',
  'owner: cannot add a metrics point'
);

select throws_ok(
  $$ update public.metrics_points set training_loss = 0.01
     where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table metrics_points',
  'owner: cannot change a metrics point'
);

select throws_ok(
  $$ delete from public.metrics_points where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table metrics_points',
  'owner: cannot delete a metrics point'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select results_eq(
  $$ select job_id, step from public.metrics_points $$,
  $$ values ('10b00000-0000-4000-8000-00000000b001'::uuid, 10) $$,
  'another user: sees only their own job''s metrics, none of alice''s'
);

select throws_ok(
  $$ insert into public.metrics_points (job_id, step, training_loss)
     values ('10b00000-0000-4000-8000-00000000a001', 40, 99) $$,
  '42501', 'permission denied for table metrics_points',
  'another user: cannot add a point to alice''s job'
);

select throws_ok(
  $$ update public.metrics_points set training_loss = 99
     where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table metrics_points',
  'another user: cannot change alice''s metrics'
);

select throws_ok(
  $$ delete from public.metrics_points where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table metrics_points',
  'another user: cannot delete alice''s metrics'
);

-- === Anonymous ===================================================================================
reset role;
select tests.act_as_anon();

select throws_ok(
  $$ select * from public.metrics_points $$,
  '42501', 'permission denied for table metrics_points',
  'anon: cannot read metrics'
);

select throws_ok(
  $$ insert into public.metrics_points (job_id, step) values ('10b00000-0000-4000-8000-00000000a001', 40) $$,
  '42501', 'permission denied for table metrics_points',
  'anon: cannot add a metrics point'
);

select throws_ok(
  $$ update public.metrics_points set training_loss = 99 $$,
  '42501', 'permission denied for table metrics_points',
  'anon: cannot change metrics'
);

select throws_ok(
  $$ delete from public.metrics_points $$,
  '42501', 'permission denied for table metrics_points',
  'anon: cannot delete metrics'
);

-- The refused writes above changed nothing.
reset role;

select results_eq(
  $$ select step, training_loss from public.metrics_points
     where job_id = '10b00000-0000-4000-8000-00000000a001' order by step $$,
  $$ values (10, 2.0::float8), (20, 1.5), (30, 1.2) $$,
  'alice''s metrics are as the fixtures left them'
);

-- === Service role ================================================================================
select tests.act_as_service_role();

select results_eq(
  $$ select count(*)::int from public.metrics_points
     where job_id in ('10b00000-0000-4000-8000-00000000a001', '10b00000-0000-4000-8000-00000000b001') $$,
  $$ values (4) $$,
  'service role: sees every job''s metrics'
);

select lives_ok(
  $$ insert into public.metrics_points (job_id, step, epoch, training_loss)
     values ('10b00000-0000-4000-8000-00000000a001', 40, 1, 1.0) $$,
  'service role: adds a metrics point'
);

-- A point polled twice is stored once.
select results_eq(
  $$ with i as (insert into public.metrics_points (job_id, step, training_loss)
                values ('10b00000-0000-4000-8000-00000000a001', 40, 5.0)
                on conflict (job_id, step) do nothing returning 1)
     select count(*)::int from i $$,
  $$ values (0) $$,
  'service role: a second point for the same step is not stored'
);

select results_eq(
  $$ with u as (update public.metrics_points set validation_loss = 1.1
                where job_id = '10b00000-0000-4000-8000-00000000a001' and step = 40 returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'service role: updates a metrics point'
);

select results_eq(
  $$ select training_loss, validation_loss from public.metrics_points
     where job_id = '10b00000-0000-4000-8000-00000000a001' and step = 40 $$,
  $$ values (1.0::float8, 1.1::float8) $$,
  'service role: the point holds the first loss and the update'
);

select results_eq(
  $$ with d as (delete from public.metrics_points
                where job_id = '10b00000-0000-4000-8000-00000000b001' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a metrics point'
);

select * from finish();
rollback;
