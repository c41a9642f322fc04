-- Tables of the LoRA training runner: GPU prices, datasets, training jobs, their metrics, costs and
-- notifications. Grants, RLS and policies live in their own migration; the job state machine too.

-- --- job status ----------------------------------------------------------------------------------

create type public.job_status as enum (
  'queued', 'initializing', 'running', 'completed', 'failed', 'cancelled'
);

comment on type public.job_status is
  'queued -> initializing -> running -> completed | failed | cancelled; see public.job_transition_allowed';

-- --- GPU prices: data, not code ------------------------------------------------------------------

create table public.gpu_prices (
  gpu_type text primary key check (gpu_type ~ '^[A-Za-z0-9_.-]{1,40}$'),
  hourly_rate numeric(10, 4) not null check (hourly_rate >= 0),
  currency text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  updated_at timestamptz not null default now()
);

comment on table public.gpu_prices is
  'On-demand price of one GPU for one hour; cost = hourly_rate x gpu_count x hours.';

insert into public.gpu_prices (gpu_type, hourly_rate) values
  ('H100', 4.7600),
  ('A100-80GB', 3.4000),
  ('A100', 2.9000),
  ('L40S', 1.9500),
  ('A10G', 1.2100),
  ('L4', 0.8000),
  ('T4', 0.5300);

-- --- datasets ------------------------------------------------------------------------------------

create table public.datasets (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  name text not null check (length(name) between 1 and 200),
  description text,
  -- NULL means 'lora-datasets'; 'training-files' holds files imported by the data bridge. Other
  -- names are refused by the processor with a message (not here: rows come from other apps).
  storage_bucket text,
  storage_path text not null check (length(storage_path) > 0),
  file_size_bytes bigint check (file_size_bytes >= 0),
  training_ready boolean not null default false,
  total_training_pairs integer check (total_training_pairs >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index datasets_user_id_idx on public.datasets (user_id, created_at desc);

-- --- training jobs -------------------------------------------------------------------------------

create table public.training_jobs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  dataset_id uuid not null references public.datasets (id) on delete restrict,
  status public.job_status not null default 'queued',
  progress numeric(5, 2) not null default 0 check (progress between 0 and 100),
  current_epoch integer not null default 0 check (current_epoch >= 0),
  total_epochs integer check (total_epochs > 0),
  current_step integer not null default 0 check (current_step >= 0),
  total_steps integer check (total_steps >= 0),
  current_metrics jsonb not null default '{}'::jsonb check (jsonb_typeof(current_metrics) = 'object'),
  -- Bounded so one job cannot stretch every cycle that reads it (the processor refuses more
  -- than 64 KiB as well; a test keeps the two limits equal).
  hyperparameters jsonb not null default '{}'::jsonb
    check (jsonb_typeof(hyperparameters) = 'object' and octet_length(hyperparameters::text) <= 65536),
  -- gpu_count is a whole number written as one (2, not 2.0 or "2"): billing multiplies by it and
  -- every reader casts it to integer.
  gpu_config jsonb not null default '{"gpu_type": "A100", "gpu_count": 1}'::jsonb
    check (
      jsonb_typeof(gpu_config) = 'object'
      and jsonb_typeof(gpu_config -> 'gpu_type') = 'string'
      and jsonb_typeof(gpu_config -> 'gpu_count') = 'number'
      and (gpu_config ->> 'gpu_count') ~ '^[1-9][0-9]?$'
      and (gpu_config ->> 'gpu_count')::integer between 1 and 64
    ),
  estimated_total_cost numeric(12, 4) check (estimated_total_cost >= 0),
  current_cost numeric(12, 4) not null default 0 check (current_cost >= 0),
  final_cost numeric(12, 4) check (final_cost >= 0),
  external_job_id text,
  error_message text,
  -- Where the cluster left the trained adapter; read by the model-artifacts stage.
  artifact_location text,
  estimated_completion_at timestamptz,
  started_at timestamptz,
  completed_at timestamptz,
  -- The run's own start and end as the cluster reports them: billing follows these, not the
  -- processor's polls, so a crash or a slow poll never changes what a run costs.
  run_started_at timestamptz,
  run_ended_at timestamptz,
  -- Set while the cluster cannot be reached about this job (cleared by the next good poll); the
  -- job fails only once contact has been lost for PROCESSOR_LOST_CONTACT_FAIL_SECONDS.
  lost_contact_since timestamptz,
  -- When the run's end was confirmed by the cluster (or there was nothing left to learn). Until
  -- then an ended job is still polled, for its last points, its run times and the truth about
  -- how its run ended (a cancel can arrive after the run completed).
  run_settled_at timestamptz,
  -- What the cluster says about the run while it is active, for the owner: e.g. why it still
  -- waits (no free GPU of its type). Replaced by every good poll.
  status_message text check (length(status_message) <= 1000),
  -- Set when the stalled rule fires (no new step for far longer than usual), cleared on progress.
  stalled_since timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  -- The processor's bookkeeping (docs/architecture.md, "The processor cycle").
  -- Stored before the cluster is called, so a crash between "cluster accepted" and "id stored"
  -- resubmits with the same key and the cluster answers with the same external job.
  idempotency_key uuid,
  -- Cluster calls that failed transiently in a row; the job fails once it reaches the limit.
  attempts integer not null default 0 check (attempts >= 0),
  -- Which processor invocation owns the job right now, and until when; a write that carries
  -- another owner, or arrives after a takeover, changes nothing.
  lease_owner uuid,
  lease_expires_at timestamptz,
  next_poll_at timestamptz,
  -- When the step counter last moved: the stalled warning compares it with the usual step time.
  last_progress_at timestamptz,
  -- Cancel requested in the database; delivered once the cluster acknowledged it.
  cancel_requested_at timestamptz,
  cancel_delivered_at timestamptz,

  check (current_step <= total_steps or total_steps is null),
  check (completed_at is null or status in ('completed', 'failed', 'cancelled'))
);

create index training_jobs_user_id_idx on public.training_jobs (user_id, created_at desc);
create index training_jobs_dataset_id_idx on public.training_jobs (dataset_id);
-- The processor's scans: oldest queued first; jobs due for a poll; expired leases;
-- cancels not yet delivered to the cluster.
create index training_jobs_queued_idx on public.training_jobs (created_at)
  where status = 'queued';
-- Polled: active jobs, and ended jobs whose run's own end the cluster has not yet confirmed.
create index training_jobs_due_poll_idx on public.training_jobs (next_poll_at)
  where external_job_id is not null and run_settled_at is null;
create index training_jobs_lease_idx on public.training_jobs (lease_expires_at)
  where lease_expires_at is not null;
create index training_jobs_pending_cancel_idx on public.training_jobs (cancel_requested_at)
  where cancel_requested_at is not null and cancel_delivered_at is null;
create unique index training_jobs_external_job_id_key on public.training_jobs (external_job_id)
  where external_job_id is not null;
create unique index training_jobs_idempotency_key_key on public.training_jobs (idempotency_key)
  where idempotency_key is not null;

-- --- metrics -------------------------------------------------------------------------------------

create table public.metrics_points (
  job_id uuid not null references public.training_jobs (id) on delete cascade,
  step integer not null check (step >= 0),
  epoch integer not null default 0 check (epoch >= 0),
  training_loss double precision,
  validation_loss double precision,
  learning_rate double precision,
  throughput double precision check (throughput >= 0),
  gpu_utilization double precision check (gpu_utilization between 0 and 100),
  gpu_memory double precision check (gpu_memory >= 0),
  recorded_at timestamptz not null default now(),
  -- One point per step and job: a point polled twice is stored once. Also the series' index.
  primary key (job_id, step)
);

comment on column public.metrics_points.throughput is 'tokens per second';
comment on column public.metrics_points.gpu_utilization is 'percent';
comment on column public.metrics_points.gpu_memory is 'GB in use';

-- --- costs ---------------------------------------------------------------------------------------

create table public.cost_records (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  job_id uuid references public.training_jobs (id) on delete set null,
  cost_type text not null check (cost_type in ('training_compute', 'storage', 'inference')),
  amount numeric(12, 4) not null check (amount >= 0),
  currency text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  billing_period text not null check (billing_period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);

create index cost_records_user_id_idx on public.cost_records (user_id, created_at desc);
create index cost_records_job_id_idx on public.cost_records (job_id);
-- One compute charge per finished job, never two, whoever finishes it.
create unique index cost_records_one_compute_charge_per_job on public.cost_records (job_id)
  where cost_type = 'training_compute';

-- --- notifications -------------------------------------------------------------------------------

create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  job_id uuid references public.training_jobs (id) on delete cascade,
  type text not null check (length(type) between 1 and 64),
  title text not null,
  message text not null,
  priority text not null default 'normal' check (priority in ('low', 'normal', 'high', 'urgent')),
  read boolean not null default false,
  metadata jsonb not null default '{}'::jsonb,
  -- Each lifecycle event is notified once: writers use a key such as 'job:<id>:completed' and
  -- `on conflict do nothing`.
  dedupe_key text unique,
  created_at timestamptz not null default now()
);

create index notifications_user_id_idx on public.notifications (user_id, created_at desc);
create index notifications_unread_idx on public.notifications (user_id) where not read;
create index notifications_job_id_idx on public.notifications (job_id);

-- --- updated_at ----------------------------------------------------------------------------------

create function public.set_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

create trigger datasets_set_updated_at before update on public.datasets
  for each row execute function public.set_updated_at();
create trigger training_jobs_set_updated_at before update on public.training_jobs
  for each row execute function public.set_updated_at();
