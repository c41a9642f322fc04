-- datasets: owners read their own datasets and change nothing (rows come from the app that
-- uploads them); other users and anon get nothing; the service role does everything.
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

insert into public.datasets (id, user_id, name, storage_bucket, storage_path) values
  ('da7a0000-0000-4000-8000-0000000a11c1', 'a11ce000-0000-4000-8000-000000000000', 'alice data', null, 'alice/data.jsonl'),
  ('da7a0000-0000-4000-8000-0000000a11c2', 'a11ce000-0000-4000-8000-000000000000', 'alice import', 'training-files', 'alice/import.jsonl'),
  ('da7a0000-0000-4000-8000-00000000b0b0', 'b0b00000-0000-4000-8000-000000000000', 'bob data', null, 'bob/data.jsonl');

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select set_eq(
  $$ select id from public.datasets $$,
  $$ values ('da7a0000-0000-4000-8000-0000000a11c1'::uuid), ('da7a0000-0000-4000-8000-0000000a11c2') $$,
  'owner: sees exactly their own datasets'
);

select throws_ok(
  $$ insert into public.datasets (user_id, name, storage_path)
     values ('a11ce000-0000-4000-8000-000000000000', 'mine', 'alice/new.jsonl') $$,
  '42501', 'permission denied for table datasets',
  'owner: cannot create a dataset'
);

select throws_ok(
  $$ update public.datasets set storage_bucket = 'elsewhere' where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'owner: cannot change where their dataset is stored'
);

select throws_ok(
  $$ update public.datasets set training_ready = true where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'owner: cannot mark their dataset training-ready'
);

select throws_ok(
  $$ delete from public.datasets where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'owner: cannot delete a dataset'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select results_eq(
  $$ select id from public.datasets $$,
  $$ values ('da7a0000-0000-4000-8000-00000000b0b0'::uuid) $$,
  'another user: sees only their own dataset, none of alice''s'
);

select throws_ok(
  $$ insert into public.datasets (user_id, name, storage_path)
     values ('a11ce000-0000-4000-8000-000000000000', 'planted', 'bob/planted.jsonl') $$,
  '42501', 'permission denied for table datasets',
  'another user: cannot create a dataset for alice'
);

select throws_ok(
  $$ update public.datasets set storage_path = 'bob/data.jsonl' where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'another user: cannot point alice''s dataset at their own file'
);

select throws_ok(
  $$ delete from public.datasets where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'another user: cannot delete alice''s dataset'
);

-- === Anonymous ===================================================================================
reset role;
select tests.act_as_anon();

select throws_ok(
  $$ select * from public.datasets $$,
  '42501', 'permission denied for table datasets',
  'anon: cannot read datasets'
);

select throws_ok(
  $$ insert into public.datasets (user_id, name, storage_path)
     values ('a11ce000-0000-4000-8000-000000000000', 'anon', 'anon/data.jsonl') $$,
  '42501', 'permission denied for table datasets',
  'anon: cannot create a dataset'
);

select throws_ok(
  $$ update public.datasets set name = 'renamed' where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'anon: cannot change a dataset'
);

select throws_ok(
  $$ delete from public.datasets where id = 'da7a0000-0000-4000-8000-0000000a11c1' $$,
  '42501', 'permission denied for table datasets',
  'anon: cannot delete a dataset'
);

-- The refused writes above changed nothing.
reset role;

select results_eq(
  $$ select id, name, storage_bucket, storage_path, training_ready from public.datasets
     where user_id = 'a11ce000-0000-4000-8000-000000000000' order by id $$,
  $$ values ('da7a0000-0000-4000-8000-0000000a11c1'::uuid, 'alice data', null::text, 'alice/data.jsonl', false),
            ('da7a0000-0000-4000-8000-0000000a11c2', 'alice import', 'training-files', 'alice/import.jsonl', false) $$,
  'alice''s datasets are as the fixtures left them'
);

-- === Service role ================================================================================
select tests.act_as_service_role();

select set_eq(
  $$ select id from public.datasets
     where user_id in ('a11ce000-0000-4000-8000-000000000000', 'b0b00000-0000-4000-8000-000000000000') $$,
  $$ values ('da7a0000-0000-4000-8000-0000000a11c1'::uuid), ('da7a0000-0000-4000-8000-0000000a11c2'),
            ('da7a0000-0000-4000-8000-00000000b0b0') $$,
  'service role: sees every user''s datasets'
);

select lives_ok(
  $$ insert into public.datasets (id, user_id, name, storage_path)
     values ('da7a0000-0000-4000-8000-00000000b0b1', 'b0b00000-0000-4000-8000-000000000000',
             'bob second', 'bob/second.jsonl') $$,
  'service role: creates a dataset'
);

select results_eq(
  $$ with u as (update public.datasets set training_ready = true, total_training_pairs = 200
                where id = 'da7a0000-0000-4000-8000-00000000b0b1' returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'service role: updates a dataset'
);

select results_eq(
  $$ select training_ready, total_training_pairs from public.datasets
     where id = 'da7a0000-0000-4000-8000-00000000b0b1' $$,
  $$ values (true, 200) $$,
  'service role: the update is stored'
);

select results_eq(
  $$ with d as (delete from public.datasets where id = 'da7a0000-0000-4000-8000-00000000b0b1' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a dataset'
);

select is_empty(
  $$ select from public.datasets where id = 'da7a0000-0000-4000-8000-00000000b0b1' $$,
  'service role: the deleted dataset is gone'
);

select * from finish();
rollback;
