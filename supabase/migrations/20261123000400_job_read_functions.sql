-- Read operations the functions call through the gateway (DESIGN section 4). SECURITY INVOKER:
-- they run as the caller, so RLS decides what comes back.

create function public.get_training_job(p_job_id uuid) returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select to_jsonb(j) from public.training_jobs j where j.id = p_job_id
$$;

comment on function public.get_training_job(uuid) is
  'The job as JSON, or NULL when it does not exist or is not the caller''s.';

revoke execute on function public.get_training_job(uuid) from public, anon;
grant execute on function public.get_training_job(uuid) to authenticated, service_role;
