-- gpu_prices: every signed-in user reads the price list (it is no one's private data) and changes
-- nothing; anon gets nothing; the service role does everything. Prices belong to no user, so the
-- owner and another user are one actor here: a signed-in user.
begin;
create extension if not exists pgtap;
select plan(16);

-- Actors: tests.act_as_user(uuid), tests.act_as_anon(), tests.act_as_service_role(), from
-- 000-test-helpers.sql.

-- Fixtures, as the superuser.
insert into auth.users (id, email) values ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test');

insert into public.gpu_prices (gpu_type, hourly_rate) values ('pgtap-gpu', 1.5);

-- How many prices there are, to compare with what a signed-in user sees.
select set_config('tests.gpu_price_count', (select count(*)::text from public.gpu_prices), true);

-- === Signed-in user (alice) ======================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select results_eq(
  $$ select count(*)::text from public.gpu_prices $$,
  $$ values (current_setting('tests.gpu_price_count')) $$,
  'signed-in user: sees every price'
);

select results_eq(
  $$ select hourly_rate from public.gpu_prices where gpu_type = 'pgtap-gpu' $$,
  $$ values (1.5::numeric) $$,
  'signed-in user: reads a price'
);

select throws_ok(
  $$ insert into public.gpu_prices (gpu_type, hourly_rate) values ('free-gpu', 0) $$,
  '42501', 'permission denied for table gpu_prices',
  'signed-in user: cannot add a price'
);

select throws_ok(
  $$ update public.gpu_prices set hourly_rate = 0 where gpu_type = 'pgtap-gpu' $$,
  '42501', 'permission denied for table gpu_prices',
  'signed-in user: cannot change a price'
);

select throws_ok(
  $$ delete from public.gpu_prices where gpu_type = 'pgtap-gpu' $$,
  '42501', 'permission denied for table gpu_prices',
  'signed-in user: cannot delete a price'
);

-- === Anonymous ===================================================================================
reset role;
select tests.act_as_anon();

select throws_ok(
  $$ select * from public.gpu_prices $$,
  '42501', 'permission denied for table gpu_prices',
  'anon: cannot read prices'
);

select throws_ok(
  $$ insert into public.gpu_prices (gpu_type, hourly_rate) values ('free-gpu', 0) $$,
  '42501', 'permission denied for table gpu_prices',
  'anon: cannot add a price'
);

select throws_ok(
  $$ update public.gpu_prices set hourly_rate = 0 $$,
  '42501', 'permission denied for table gpu_prices',
  'anon: cannot change prices'
);

select throws_ok(
  $$ delete from public.gpu_prices $$,
  '42501', 'permission denied for table gpu_prices',
  'anon: cannot delete prices'
);

-- The refused writes above changed nothing.
reset role;

select results_eq(
  $$ select count(*)::text, count(*) filter (where gpu_type = 'pgtap-gpu' and hourly_rate = 1.5)::int
     from public.gpu_prices $$,
  $$ values (current_setting('tests.gpu_price_count'), 1) $$,
  'the prices are as the fixtures left them'
);

-- === Service role ================================================================================
select tests.act_as_service_role();

select results_eq(
  $$ select count(*)::text from public.gpu_prices $$,
  $$ values (current_setting('tests.gpu_price_count')) $$,
  'service role: sees every price'
);

select lives_ok(
  $$ insert into public.gpu_prices (gpu_type, hourly_rate) values ('pgtap-gpu-2', 2.25) $$,
  'service role: adds a price'
);

select results_eq(
  $$ with u as (update public.gpu_prices set hourly_rate = 2.5 where gpu_type = 'pgtap-gpu-2' returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'service role: changes a price'
);

select results_eq(
  $$ select hourly_rate from public.gpu_prices where gpu_type = 'pgtap-gpu-2' $$,
  $$ values (2.5::numeric) $$,
  'service role: the new price is stored'
);

select results_eq(
  $$ with d as (delete from public.gpu_prices where gpu_type = 'pgtap-gpu-2' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a price'
);

select is_empty(
  $$ select from public.gpu_prices where gpu_type = 'pgtap-gpu-2' $$,
  'service role: the deleted price is gone'
);

select * from finish();
rollback;
