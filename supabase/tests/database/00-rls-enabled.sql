-- Schema-wide guards: RLS on every table in public, exactly the expected policies (each for the
-- command and role it is meant for), and privileges no wider than those policies assume. A new
-- table, policy or grant has to be added here on purpose.
begin;
create extension if not exists pgtap;
select plan(29);

-- === RLS everywhere ==============================================================================

select is_empty(
  $$ select c.relname::text
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity
     order by 1 $$,
  'every table in public has row level security enabled (listed: the tables without it)'
);

-- === Policies, by table ==========================================================================

select policies_are('public', 'gpu_prices',
  array['GPU prices are viewable by signed-in users']);
select policies_are('public', 'datasets',
  array['Datasets are viewable by their owner']);
select policies_are('public', 'training_jobs',
  array['Training jobs are viewable by their owner',
        'Owners can cancel their own active training jobs',
        'Users can create training jobs on their own datasets']);
select policies_are('public', 'metrics_points',
  array['Metrics are viewable by the owner of their job']);
select policies_are('public', 'cost_records',
  array['Cost records are viewable by their owner']);
select policies_are('public', 'notifications',
  array['Notifications are viewable by their owner',
        'Owners can mark their own notifications read']);

-- Every policy is for signed-in users only (anon gets nothing; the service role bypasses RLS),
-- and for the one command it is named after.
select policy_roles_are('public', 'gpu_prices', 'GPU prices are viewable by signed-in users', array['authenticated'],
  'gpu_prices: "GPU prices are viewable by signed-in users" is for authenticated only');
select policy_cmd_is('public', 'gpu_prices', 'GPU prices are viewable by signed-in users', 'select',
  'gpu_prices: "GPU prices are viewable by signed-in users" is for SELECT');

select policy_roles_are('public', 'datasets', 'Datasets are viewable by their owner', array['authenticated'],
  'datasets: "Datasets are viewable by their owner" is for authenticated only');
select policy_cmd_is('public', 'datasets', 'Datasets are viewable by their owner', 'select',
  'datasets: "Datasets are viewable by their owner" is for SELECT');

select policy_roles_are('public', 'training_jobs', 'Training jobs are viewable by their owner', array['authenticated'],
  'training_jobs: "Training jobs are viewable by their owner" is for authenticated only');
select policy_cmd_is('public', 'training_jobs', 'Training jobs are viewable by their owner', 'select',
  'training_jobs: "Training jobs are viewable by their owner" is for SELECT');

select policy_roles_are('public', 'training_jobs', 'Owners can cancel their own active training jobs', array['authenticated'],
  'training_jobs: "Owners can cancel their own active training jobs" is for authenticated only');
select policy_cmd_is('public', 'training_jobs', 'Owners can cancel their own active training jobs', 'update',
  'training_jobs: "Owners can cancel their own active training jobs" is for UPDATE');

select policy_roles_are('public', 'training_jobs', 'Users can create training jobs on their own datasets', array['authenticated'],
  'training_jobs: "Users can create training jobs on their own datasets" is for authenticated only');
select policy_cmd_is('public', 'training_jobs', 'Users can create training jobs on their own datasets', 'insert',
  'training_jobs: "Users can create training jobs on their own datasets" is for INSERT');

select policy_roles_are('public', 'metrics_points', 'Metrics are viewable by the owner of their job', array['authenticated'],
  'metrics_points: "Metrics are viewable by the owner of their job" is for authenticated only');
select policy_cmd_is('public', 'metrics_points', 'Metrics are viewable by the owner of their job', 'select',
  'metrics_points: "Metrics are viewable by the owner of their job" is for SELECT');

select policy_roles_are('public', 'cost_records', 'Cost records are viewable by their owner', array['authenticated'],
  'cost_records: "Cost records are viewable by their owner" is for authenticated only');
select policy_cmd_is('public', 'cost_records', 'Cost records are viewable by their owner', 'select',
  'cost_records: "Cost records are viewable by their owner" is for SELECT');

select policy_roles_are('public', 'notifications', 'Notifications are viewable by their owner', array['authenticated'],
  'notifications: "Notifications are viewable by their owner" is for authenticated only');
select policy_cmd_is('public', 'notifications', 'Notifications are viewable by their owner', 'select',
  'notifications: "Notifications are viewable by their owner" is for SELECT');

select policy_roles_are('public', 'notifications', 'Owners can mark their own notifications read', array['authenticated'],
  'notifications: "Owners can mark their own notifications read" is for authenticated only');
select policy_cmd_is('public', 'notifications', 'Owners can mark their own notifications read', 'update',
  'notifications: "Owners can mark their own notifications read" is for UPDATE');

-- === Privileges behind the policies ==============================================================
-- Supabase grants everything in public to anon and authenticated by default; RLS alone would then
-- decide, and a permissive policy added later would open writes. The grants keep them closed.

select is_empty(
  $$ select c.relname::text
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p')
       and (has_table_privilege('anon', c.oid, 'select, insert, update, delete, truncate, references, trigger')
            or has_any_column_privilege('anon', c.oid, 'select, insert, update, references'))
     order by 1 $$,
  'anon holds no privilege on any table in public (listed: the tables it has one on)'
);

select is_empty(
  $$ select c.relname::text
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p')
       and (has_table_privilege('authenticated', c.oid, 'delete, truncate, references, trigger')
            or has_any_column_privilege('authenticated', c.oid, 'references')
            -- Jobs are created from the frontend, column by column (the job-creation migration).
            or (c.relname <> 'training_jobs'
                and (has_table_privilege('authenticated', c.oid, 'insert')
                     or has_any_column_privilege('authenticated', c.oid, 'insert'))))
     order by 1 $$,
  'authenticated cannot insert (but jobs), delete or truncate any table in public (listed: those it can)'
);

select set_eq(
  $$ select c.relname || '.' || a.attname
     from pg_class c
       join pg_namespace n on n.oid = c.relnamespace
       join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
     where n.nspname = 'public' and c.relkind in ('r', 'p')
       and has_column_privilege('authenticated', c.oid, a.attnum, 'update') $$,
  array['training_jobs.status', 'notifications.read'],
  'authenticated may update only training_jobs.status (to cancel) and notifications.read'
);

select is_empty(
  $$ select p.oid::regprocedure::text
     from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and has_function_privilege('anon', p.oid, 'execute')
       and not exists (select from pg_depend d
                       where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
     order by 1 $$,
  'anon can execute no function of the schema in public (listed: those it can)'
);

select * from finish();
rollback;
