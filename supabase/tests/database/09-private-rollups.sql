-- lora_private: the internals of get_job_detail (the metrics rollups and their helpers), kept out
-- of the Data API. RLS on every table there; signed-in users may read their own jobs' rollups
-- (get_job_detail runs as its caller and reads them) and write nothing; anon may not even use the
-- schema; only the service role and the metrics_points triggers write it.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
-- alice's job ...a001: points at steps 0..299, training loss 10 - step/100 except a spike of 100 at
-- step 200 and a dip of -1 at step 20. bob's job ...b001: points at steps 0, 1, 2.
-- Widths 16, 128, 1024, 8192, 65536: alice's job has 19 + 3 + 1 + 1 + 1 = 25 rollup rows, bob's 5.
begin;
create extension if not exists pgtap;
select plan(37);

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

insert into public.metrics_points (job_id, step, training_loss)
select '10b00000-0000-4000-8000-00000000a001', s,
       case s when 200 then 100 when 20 then -1 else 10 - s / 100.0 end
from generate_series(0, 299) s;

insert into public.metrics_points (job_id, step, training_loss)
select '10b00000-0000-4000-8000-00000000b001', s, 1.0 from generate_series(0, 2) s;

-- === Schema-wide guards ==========================================================================

select is_empty(
  $$ select c.relname::text
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'lora_private' and c.relkind in ('r', 'p') and not c.relrowsecurity
     order by 1 $$,
  'every table in lora_private has row level security enabled (listed: the tables without it)'
);

select tables_are('lora_private', array['metrics_rollups'],
  'lora_private holds exactly the tables this file covers');

select policies_are('lora_private', 'metrics_rollups',
  array['Metric rollups are viewable by the owner of their job']);
select policy_roles_are('lora_private', 'metrics_rollups',
  'Metric rollups are viewable by the owner of their job', array['authenticated'],
  'metrics_rollups: the policy is for authenticated only');
select policy_cmd_is('lora_private', 'metrics_rollups',
  'Metric rollups are viewable by the owner of their job', 'select',
  'metrics_rollups: the policy is for SELECT');

select ok(
  not has_schema_privilege('anon', 'lora_private', 'usage')
  and not has_schema_privilege('anon', 'lora_private', 'create'),
  'anon may not use lora_private'
);

select ok(
  not has_schema_privilege('authenticated', 'lora_private', 'create')
  and not has_schema_privilege('service_role', 'lora_private', 'create'),
  'neither authenticated nor the service role may create objects in lora_private'
);

select is_empty(
  $$ select c.relname || ': ' || r.rolname
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
       cross join (values ('anon'), ('authenticated')) r (rolname)
     where n.nspname = 'lora_private' and c.relkind in ('r', 'p', 'v', 'm', 'S')
       and (has_table_privilege(r.rolname, c.oid, 'insert, update, delete, truncate, references, trigger')
            or has_any_column_privilege(r.rolname, c.oid, 'insert, update, references')
            or (r.rolname = 'anon' and has_any_column_privilege('anon', c.oid, 'select')))
     order by 1 $$,
  'anon holds no privilege and authenticated nothing but SELECT on lora_private (listed: table: role)'
);

select ok(
  has_table_privilege('authenticated', 'lora_private.metrics_rollups', 'select'),
  'authenticated may read metrics_rollups (get_job_detail runs as its caller and reads them)'
);

select is_empty(
  $$ select p.oid::regprocedure::text
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'lora_private' and has_function_privilege('anon', p.oid, 'execute')
     order by 1 $$,
  'anon can execute no function in lora_private (listed: those it can)'
);

select is_empty(
  $$ select p.oid::regprocedure::text
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'lora_private' and p.prosecdef
     order by 1 $$,
  'no function in lora_private is SECURITY DEFINER (listed: those that are)'
);

-- === Out of the Data API's reach =================================================================
-- The Data API serves the schemas in supabase/config.toml's api.schemas (["public"]): lora_private
-- must not be public, and nothing in public may re-expose it.

select ok(
  (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where c.oid = 'lora_private.metrics_rollups'::regclass) <> 'public',
  'metrics_rollups lives outside the public schema'
);

select hasnt_table('public', 'metrics_rollups', 'no public.metrics_rollups');

select is_empty(
  $$ select distinct v.relname::text
     from pg_class v
       join pg_namespace vn on vn.oid = v.relnamespace
       join pg_rewrite rw on rw.ev_class = v.oid
       join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = rw.oid
                       and d.refclassid = 'pg_class'::regclass
       join pg_class t on t.oid = d.refobjid
       join pg_namespace tn on tn.oid = t.relnamespace
     where vn.nspname = 'public' and tn.nspname = 'lora_private'
     order by 1 $$,
  'no view in public reads from lora_private (listed: the views that do)'
);

select is_empty(
  $$ select p.oid::regprocedure::text
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public' and p.prosecdef and p.prosrc ilike '%lora_private.metrics_rollups%'
     order by 1 $$,
  'no SECURITY DEFINER function in public reads the rollups around RLS (listed: those that do)'
);

-- === The triggers keep the rollups (as the superuser wrote the points) ===========================

select results_eq(
  $$ select job_id, width, count(*)::int from lora_private.metrics_rollups
     where job_id in ('10b00000-0000-4000-8000-00000000a001', '10b00000-0000-4000-8000-00000000b001')
     group by 1, 2 order by 1, 2 $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid, 16, 19), ('10b00000-0000-4000-8000-00000000a001', 128, 3),
            ('10b00000-0000-4000-8000-00000000a001', 1024, 1), ('10b00000-0000-4000-8000-00000000a001', 8192, 1),
            ('10b00000-0000-4000-8000-00000000a001', 65536, 1),
            ('10b00000-0000-4000-8000-00000000b001', 16, 1), ('10b00000-0000-4000-8000-00000000b001', 128, 1),
            ('10b00000-0000-4000-8000-00000000b001', 1024, 1), ('10b00000-0000-4000-8000-00000000b001', 8192, 1),
            ('10b00000-0000-4000-8000-00000000b001', 65536, 1) $$,
  'inserting points filled one rollup row per job, width and touched bucket'
);

select results_eq(
  $$ select first_step, lowest, highest from lora_private.metrics_rollups
     where job_id = '10b00000-0000-4000-8000-00000000a001' and width = 1024 $$,
  $$ values (0, array[-1, 20]::float8[], array[100, -200]::float8[]) $$,
  'a rollup row keeps its bucket''s first step, lowest [loss, step] and highest [loss, -step]'
);

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select results_eq(
  $$ select job_id, count(*)::int from lora_private.metrics_rollups group by 1 $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid, 25) $$,
  'owner: reads exactly their own job''s rollup rows'
);

select throws_ok(
  $$ insert into lora_private.metrics_rollups (job_id, width, bucket, first_step)
     values ('10b00000-0000-4000-8000-00000000a001', 16, 999, 15984) $$,
  '42501', 'permission denied for table metrics_rollups',
  'owner: cannot insert a rollup row'
);

select throws_ok(
  $$ update lora_private.metrics_rollups set highest = array[0, 0]
     where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table metrics_rollups',
  'owner: cannot change their rollups'
);

select throws_ok(
  $$ delete from lora_private.metrics_rollups where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  '42501', 'permission denied for table metrics_rollups',
  'owner: cannot delete their rollups'
);

select throws_ok(
  $$ insert into public.metrics_points (job_id, step) values ('10b00000-0000-4000-8000-00000000a001', 300) $$,
  '42501', 'permission denied for table metrics_points',
  'owner: cannot write points, so cannot drive the rollup triggers'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select is_empty(
  $$ select from lora_private.metrics_rollups where job_id = '10b00000-0000-4000-8000-00000000a001' $$,
  'another user: reads none of alice''s rollup rows'
);

select results_eq(
  $$ select job_id, count(*)::int from lora_private.metrics_rollups group by 1 $$,
  $$ values ('10b00000-0000-4000-8000-00000000b001'::uuid, 5) $$,
  'another user: reads only their own job''s rollup rows'
);

select throws_ok(
  $$ insert into lora_private.metrics_rollups (job_id, width, bucket, first_step)
     values ('10b00000-0000-4000-8000-00000000a001', 16, 999, 15984) $$,
  '42501', 'permission denied for table metrics_rollups',
  'another user: cannot insert a rollup row for alice''s job'
);

select throws_ok(
  $$ delete from lora_private.metrics_rollups $$,
  '42501', 'permission denied for table metrics_rollups',
  'another user: cannot delete rollup rows'
);

-- === Anonymous ===================================================================================
reset role;
select tests.act_as_anon();

select throws_ok(
  $$ select * from lora_private.metrics_rollups $$,
  '42501', 'permission denied for schema lora_private',
  'anon: cannot read rollups'
);

select throws_ok(
  $$ insert into lora_private.metrics_rollups (job_id, width, bucket, first_step)
     values ('10b00000-0000-4000-8000-00000000a001', 16, 999, 15984) $$,
  '42501', 'permission denied for schema lora_private',
  'anon: cannot write rollups'
);

select throws_ok(
  $$ select lora_private.metrics_rollup_widths() $$,
  '42501', 'permission denied for schema lora_private',
  'anon: cannot call lora_private functions'
);

-- === Service role ================================================================================
reset role;
select tests.act_as_service_role();

select results_eq(
  $$ select count(*)::int from lora_private.metrics_rollups
     where job_id in ('10b00000-0000-4000-8000-00000000a001', '10b00000-0000-4000-8000-00000000b001') $$,
  $$ values (30) $$,
  'service role: reads every user''s rollup rows'
);

-- The processor writes points; the triggers run as it.
select lives_ok(
  $$ insert into public.metrics_points (job_id, step, training_loss)
     values ('10b00000-0000-4000-8000-00000000a001', 300, -5) $$,
  'service role: writes a point'
);

select results_eq(
  $$ select width, bucket, first_step, lowest from lora_private.metrics_rollups
     where job_id = '10b00000-0000-4000-8000-00000000a001' and (width, bucket) in ((16, 18), (1024, 0))
     order by width $$,
  $$ values (16, 18, 288, array[-5, 300]::float8[]), (1024, 0, 0, array[-5, 300]::float8[]) $$,
  'service role: the new point widened its buckets'' lowest'
);

-- Deleting the spike rebuilds its buckets from the points left.
select results_eq(
  $$ with d as (delete from public.metrics_points
                where job_id = '10b00000-0000-4000-8000-00000000a001' and step = 200 returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a point'
);

select results_eq(
  $$ select highest from lora_private.metrics_rollups
     where job_id = '10b00000-0000-4000-8000-00000000a001' and width = 1024 $$,
  $$ values (array[10, 0]::float8[]) $$,
  'service role: the deleted spike is gone from the rollup, rebuilt from the points left'
);

select results_eq(
  $$ with u as (update lora_private.metrics_rollups set first_step = first_step
                where job_id = '10b00000-0000-4000-8000-00000000b001' returning 1)
     select count(*)::int from u $$,
  $$ values (5) $$,
  'service role: writes rollup rows directly'
);

select results_eq(
  $$ with d as (delete from public.training_jobs where id = '10b00000-0000-4000-8000-00000000b001' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes bob''s job'
);

select is_empty(
  $$ select from lora_private.metrics_rollups where job_id = '10b00000-0000-4000-8000-00000000b001' $$,
  'service role: the deleted job took its rollups with it'
);

select * from finish();
rollback;
