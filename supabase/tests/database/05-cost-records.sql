-- cost_records: owners read their own costs and write none (charges come from the state machine
-- and the processor); other users and anon get nothing; the service role does everything, once
-- per job for the compute charge.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
begin;
create extension if not exists pgtap;
select plan(20);

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

insert into public.cost_records (id, user_id, job_id, cost_type, amount, billing_period) values
  ('c0570000-0000-4000-8000-00000000a001', 'a11ce000-0000-4000-8000-000000000000',
   '10b00000-0000-4000-8000-00000000a001', 'training_compute', 12.5, '2026-11'),
  ('c0570000-0000-4000-8000-00000000a002', 'a11ce000-0000-4000-8000-000000000000',
   null, 'storage', 0.25, '2026-11'),
  ('c0570000-0000-4000-8000-00000000b001', 'b0b00000-0000-4000-8000-000000000000',
   null, 'storage', 0.75, '2026-11');

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select results_eq(
  $$ select id, amount from public.cost_records order by id $$,
  $$ values ('c0570000-0000-4000-8000-00000000a001'::uuid, 12.5::numeric),
            ('c0570000-0000-4000-8000-00000000a002', 0.25) $$,
  'owner: sees exactly their own cost records'
);

select throws_ok(
  $$ insert into public.cost_records (user_id, cost_type, amount, billing_period)
     values ('a11ce000-0000-4000-8000-000000000000', 'storage', 0, '2026-11') $$,
  '42501', 'permission denied for table cost_records',
  'owner: cannot add a cost record'
);

select throws_ok(
  $$ update public.cost_records set amount = 0 where id = 'c0570000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table cost_records',
  'owner: cannot lower their charge'
);

select throws_ok(
  $$ delete from public.cost_records where id = 'c0570000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table cost_records',
  'owner: cannot delete their charge'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select results_eq(
  $$ select id from public.cost_records $$,
  $$ values ('c0570000-0000-4000-8000-00000000b001'::uuid) $$,
  'another user: sees only their own cost record, none of alice''s'
);

select throws_ok(
  $$ insert into public.cost_records (user_id, cost_type, amount, billing_period)
     values ('a11ce000-0000-4000-8000-000000000000', 'storage', 1000, '2026-11') $$,
  '42501', 'permission denied for table cost_records',
  'another user: cannot charge alice'
);

select throws_ok(
  $$ update public.cost_records set amount = 1000 where id = 'c0570000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table cost_records',
  'another user: cannot change alice''s charge'
);

select throws_ok(
  $$ delete from public.cost_records where id = 'c0570000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table cost_records',
  'another user: cannot delete alice''s charge'
);

-- === Anonymous ===================================================================================
reset role;
select tests.act_as_anon();

select throws_ok(
  $$ select * from public.cost_records $$,
  '42501', 'permission denied for table cost_records',
  'anon: cannot read cost records'
);

select throws_ok(
  $$ insert into public.cost_records (user_id, cost_type, amount, billing_period)
     values ('a11ce000-0000-4000-8000-000000000000', 'storage', 1000, '2026-11') $$,
  '42501', 'permission denied for table cost_records',
  'anon: cannot add a cost record'
);

select throws_ok(
  $$ update public.cost_records set amount = 0 $$,
  '42501', 'permission denied for table cost_records',
  'anon: cannot change cost records'
);

select throws_ok(
  $$ delete from public.cost_records $$,
  '42501', 'permission denied for table cost_records',
  'anon: cannot delete cost records'
);

-- The refused writes above changed nothing.
reset role;

select results_eq(
  $$ select id, amount from public.cost_records
     where user_id = 'a11ce000-0000-4000-8000-000000000000' order by id $$,
  $$ values ('c0570000-0000-4000-8000-00000000a001'::uuid, 12.5::numeric),
            ('c0570000-0000-4000-8000-00000000a002', 0.25) $$,
  'alice''s cost records are as the fixtures left them'
);

-- === Service role ================================================================================
select tests.act_as_service_role();

select set_eq(
  $$ select id from public.cost_records
     where user_id in ('a11ce000-0000-4000-8000-000000000000', 'b0b00000-0000-4000-8000-000000000000') $$,
  $$ values ('c0570000-0000-4000-8000-00000000a001'::uuid), ('c0570000-0000-4000-8000-00000000a002'),
            ('c0570000-0000-4000-8000-00000000b001') $$,
  'service role: sees every user''s cost records'
);

select lives_ok(
  $$ insert into public.cost_records (id, user_id, job_id, cost_type, amount, billing_period)
     values ('c0570000-0000-4000-8000-00000000b002', 'b0b00000-0000-4000-8000-000000000000',
             '10b00000-0000-4000-8000-00000000b001', 'training_compute', 3.2, '2026-11') $$,
  'service role: adds a compute charge'
);

select throws_ok(
  $$ insert into public.cost_records (user_id, job_id, cost_type, amount, billing_period)
     values ('b0b00000-0000-4000-8000-000000000000', '10b00000-0000-4000-8000-00000000b001',
             'training_compute', 3.2, '2026-11') $$,
  '23505', 'duplicate key value violates unique constraint "cost_records_one_compute_charge_per_job"',
  'service role: cannot charge the same job''s compute twice'
);

select results_eq(
  $$ with u as (update public.cost_records set details = '{"note": "corrected"}'
                where id = 'c0570000-0000-4000-8000-00000000b002' returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'service role: updates a cost record'
);

select results_eq(
  $$ select details ->> 'note' from public.cost_records where id = 'c0570000-0000-4000-8000-00000000b002' $$,
  $$ values ('corrected') $$,
  'service role: the update is stored'
);

select results_eq(
  $$ with d as (delete from public.cost_records where id = 'c0570000-0000-4000-8000-00000000b002' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a cost record'
);

select is_empty(
  $$ select from public.cost_records where id = 'c0570000-0000-4000-8000-00000000b002' $$,
  'service role: the deleted cost record is gone'
);

select * from finish();
rollback;
