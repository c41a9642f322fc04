-- Helpers the other files use, in schema `tests`. Unlike every other file this one commits: the
-- files after it (pg_prove and `supabase test db` run them in name order, against one database)
-- call these helpers inside their own rolled-back transactions.
--
-- Actors. Each helper switches the role and the JWT claims until the end of the transaction, the
-- way PostgREST does for a request; call them as the superuser (after `reset role`). They first
-- drop the session's cached plans, so that each actor starts like a fresh connection: a plan
-- cached while the superuser ran a trigger has its SQL functions inlined, and an inlined function
-- is checked for EXECUTE only when planned, which would hide a missing grant.
create extension if not exists pgtap;
create schema if not exists tests;

create or replace function tests.act_as_user(user_id uuid) returns void
language plpgsql
as $$
begin
  discard plans;
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
                     json_build_object('sub', user_id, 'role', 'authenticated')::text, true);
end;
$$;

create or replace function tests.act_as_anon() returns void
language plpgsql
as $$
begin
  discard plans;
  perform set_config('role', 'anon', true);
  perform set_config('request.jwt.claims', '{"role": "anon"}', true);
end;
$$;

create or replace function tests.act_as_service_role() returns void
language plpgsql
as $$
begin
  discard plans;
  perform set_config('role', 'service_role', true);
  perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
end;
$$;

select plan(3);
select has_function('tests', 'act_as_user', array['uuid'], 'tests.act_as_user(uuid) exists');
select has_function('tests', 'act_as_anon', 'tests.act_as_anon() exists');
select has_function('tests', 'act_as_service_role', 'tests.act_as_service_role() exists');
select * from finish();
