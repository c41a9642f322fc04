-- Stand-ins for what supabase/cron/*.sql uses and a plain PostgreSQL lacks: pg_cron's job table
-- and (named) schedule functions, pg_net's http_post and Supabase Vault's decrypted view. Debian
-- packages pg_cron 1.4 (no second schedules) and neither pg_net nor Vault. The signatures are
-- the extensions' own; the bodies only record what they were asked to do.

create schema cron;

create table cron.job (
  jobid bigint generated always as identity primary key,
  schedule text not null,
  command text not null,
  jobname text unique
);

-- Like pg_cron: a job of the same name is replaced, not added.
create function cron.schedule(job_name text, schedule text, command text) returns bigint
language sql as $$
  insert into cron.job (jobname, schedule, command) values (job_name, schedule, command)
  on conflict (jobname) do update set schedule = excluded.schedule, command = excluded.command
  returning jobid
$$;

create function cron.unschedule(job_id bigint) returns boolean
language sql as $$
  with removed as (delete from cron.job where jobid = job_id returning 1)
  select exists (select from removed)
$$;

create schema net;

create table net.requests (
  id bigint generated always as identity primary key,
  url text,
  body jsonb,
  params jsonb,
  headers jsonb,
  timeout_milliseconds int
);

create function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint
language sql as $$
  insert into net.requests (url, body, params, headers, timeout_milliseconds)
  values (url, body, params, headers, timeout_milliseconds)
  returning id
$$;

create schema vault;

-- Vault keeps the secrets encrypted and decrypts them in this view; here they are plain.
create table vault.secrets (
  id uuid primary key default gen_random_uuid(),
  name text unique,
  description text not null default '',
  secret text not null
);

create view vault.decrypted_secrets as
  select id, name, description, secret, secret as decrypted_secret from vault.secrets;

create function vault.create_secret(
  new_secret text, new_name text default null, new_description text default ''
) returns uuid
language sql as $$
  insert into vault.secrets (secret, name, description) values (new_secret, new_name, new_description)
  returning id
$$;

create function vault.update_secret(secret_id uuid, new_secret text) returns void
language sql as $$
  update vault.secrets set secret = new_secret where id = secret_id
$$;
