-- Opt-in: Supabase Cron calls process-training-jobs every 30 seconds (Cloud Scheduler's shortest
-- period is one minute). Deploy with processor_trigger = "supabase_cron" (infra/terraform), which
-- lets the processor be called from outside Google and makes it check the cron secret instead.
--
-- Not a migration: run it once per project, as postgres, in the SQL editor or with
--   psql "$SUPABASE_DB_URL" -v ON_ERROR_STOP=1 -f supabase/cron/schedule_processor.sql
-- Running it again replaces the job (pg_cron keys jobs by name); unschedule_processor.sql
-- removes it.
--
-- Needs, once:
--   1. the pg_cron (1.5 or newer, for second schedules) and pg_net extensions:
--      Dashboard > Integrations, or `create extension if not exists pg_cron;` and
--      `create extension if not exists pg_net;`
--   2. two Supabase Vault secrets, the processor's URL (terraform output
--      process_training_jobs_url) and the cron secret (terraform variable cron_secret):
--        select vault.create_secret('https://process-training-jobs-....run.app', 'processor_url',
--                                   'URL of process-training-jobs');
--        select vault.create_secret('<cron_secret>', 'processor_cron_secret',
--                                   'Bearer secret of process-training-jobs');
--      Change them later with vault.update_secret(id, new_secret); the job reads both on every
--      run, so a rotated secret needs no rescheduling and never appears in cron.job.

do $$
declare
  missing text[];
begin
  select array_agg(wanted order by wanted)
    into missing
    from unnest(array['processor_url', 'processor_cron_secret']) as wanted
   where not exists (
     select 1 from vault.decrypted_secrets
      where name = wanted and coalesce(decrypted_secret, '') <> ''
   );
  if missing is not null then
    raise exception 'Supabase Vault has no % yet', array_to_string(missing, ' or ')
      using hint = 'Store them first: select vault.create_secret(<value>, <name>); '
                   'see the top of supabase/cron/schedule_processor.sql.';
  end if;
end
$$;

select cron.schedule(
  'process-training-jobs',
  '30 seconds',
  $job$
  select net.http_post(
    url := (select decrypted_secret from vault.decrypted_secrets where name = 'processor_url'),
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'Authorization', 'Bearer ' || (
        select decrypted_secret from vault.decrypted_secrets where name = 'processor_cron_secret'
      )
    ),
    body := '{}'::jsonb,
    -- A cycle runs up to its time budget (45 s by default): wait for it, so pg_net's log of
    -- responses (net._http_response) shows the cycle's summary rather than a timeout.
    timeout_milliseconds := 60000
  );
  $job$
);
