-- Who may do what. RLS is the security boundary: the functions pass the caller's verified claims
-- to the database and let these policies decide.
--
-- authenticated: reads only their own rows; may cancel their own active job (status -> cancelled,
--                no other column) and mark their own notifications read; nothing else.
-- anon:          nothing.
-- service_role:  everything (BYPASSRLS), used by the processor.

-- --- grants --------------------------------------------------------------------------------------

-- Supabase grants everything in public to the API roles by default; take it back, then grant
-- exactly what the policies below are meant to allow.
revoke all on all tables in schema public from anon, authenticated;
revoke execute on all functions in schema public from public, anon, authenticated;
alter default privileges in schema public revoke execute on functions from public;
-- ...and for what later migrations add: a new table or function is closed until granted.
alter default privileges in schema public revoke all on tables from anon, authenticated;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

grant select on public.gpu_prices, public.datasets, public.training_jobs, public.metrics_points,
  public.cost_records, public.notifications to authenticated;
grant update (status) on public.training_jobs to authenticated;
grant update (read) on public.notifications to authenticated;

grant all on public.gpu_prices, public.datasets, public.training_jobs, public.metrics_points,
  public.cost_records, public.notifications to service_role;
grant execute on all functions in schema public to service_role;
-- The state machine trigger calls these while an owner cancels their job; they only compute.
grant execute on function public.job_transition_allowed(public.job_status, public.job_status),
  public.job_status_is_terminal(public.job_status),
  public.job_compute_cost(jsonb, timestamptz, timestamptz),
  public.job_billed_interval(public.training_jobs),
  public.job_billed_cost(public.training_jobs)
  to authenticated;

-- --- row level security --------------------------------------------------------------------------

alter table public.gpu_prices enable row level security;
alter table public.datasets enable row level security;
alter table public.training_jobs enable row level security;
alter table public.metrics_points enable row level security;
alter table public.cost_records enable row level security;
alter table public.notifications enable row level security;

-- --- policies ------------------------------------------------------------------------------------

create policy "GPU prices are viewable by signed-in users"
  on public.gpu_prices for select to authenticated
  using (true);

create policy "Datasets are viewable by their owner"
  on public.datasets for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Training jobs are viewable by their owner"
  on public.training_jobs for select to authenticated
  using (user_id = (select auth.uid()));

-- The column grant limits the owner to `status`; this policy limits it to cancelling an active
-- job; the state machine trigger does the rest (timestamps, final cost, cost record, notice).
create policy "Owners can cancel their own active training jobs"
  on public.training_jobs for update to authenticated
  using (
    user_id = (select auth.uid())
    and status in ('queued', 'initializing', 'running')
  )
  with check (
    user_id = (select auth.uid())
    and status = 'cancelled'
  );

-- An uncorrelated IN: the owner's job ids are looked up once per query, not once per point.
create policy "Metrics are viewable by the owner of their job"
  on public.metrics_points for select to authenticated
  using (
    job_id in (select j.id from public.training_jobs j where j.user_id = (select auth.uid()))
  );

create policy "Cost records are viewable by their owner"
  on public.cost_records for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Notifications are viewable by their owner"
  on public.notifications for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Owners can mark their own notifications read"
  on public.notifications for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
