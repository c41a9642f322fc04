-- Removes the Supabase Cron job of schedule_processor.sql; running it when there is none is
-- fine. The Vault secrets stay: delete them in Dashboard > Vault if they are no longer needed.
--   psql "$SUPABASE_DB_URL" -v ON_ERROR_STOP=1 -f supabase/cron/unschedule_processor.sql

select cron.unschedule(jobid) from cron.job where jobname = 'process-training-jobs';
