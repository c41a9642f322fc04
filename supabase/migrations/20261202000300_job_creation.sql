-- Creating a training job from a Supabase frontend (README, "Creating a job from the frontend";
-- docs/architecture.md, section 2): a signed-in user inserts into training_jobs through the Data
-- API (supabase-js `insert`), under RLS; no cloud function is involved.
--
--   supabase.from('training_jobs')
--     .insert({ dataset_id, hyperparameters: { epochs: 3 }, gpu_config: { gpu_type: 'A100', gpu_count: 1 } })
--     .select('id, status, estimated_total_cost')
--
-- Who may insert:
--
-- authenticated: a job of their own (user_id left out, or their own id), on a dataset of their
--                own that is ready for training; the BEFORE INSERT trigger below checks the
--                request, computes the estimate and gives every bookkeeping column its initial
--                value; the policy "Users can create training jobs on their own datasets" backs
--                it up.
-- anon:          nothing (no privilege).
-- service_role:  everything, as before. The trigger's checks apply exactly where row level
--                security does (row_security_active): the service role, the table's owner and
--                superusers (the processor, the seed, tests' factories, admin tools) are the
--                backend, whose rows are taken as given; only the state machine (a new job is
--                queued) and the table's constraints apply to them. The trigger fills in their
--                estimated_total_cost when they leave it NULL and the data allow one.
--
-- Refusals, each with a message written for the user (PostgREST answers the HTTP status shown):
--
--   42501 insufficient_privilege (403): not signed in, a user_id other than the caller's, a
--         dataset that does not exist or is not the caller's (the two are not told apart), a
--         value for a column the runner owns (status other than queued, current_cost,
--         final_cost, estimated_total_cost, external_job_id, progress, current_epoch,
--         total_epochs, current_step, total_steps, current_metrics).
--   23502 not_null_violation (400): no dataset_id.
--   23514 check_violation (400): the dataset is not ready for training (training_ready is false)
--         or has no training pairs counted (total_training_pairs empty or 0).
--   22023 invalid_parameter_value (400): hyperparameters or gpu_config outside the schema below
--         (a wrong type, out of bounds, an unknown key, an unpriced GPU type, a GPU count other
--         than a whole 1 to 8), or an estimate beyond what one job may cost.
--
-- The estimate (estimated_total_cost), from data: gpu_prices gives the GPU type's hourly_rate,
-- its training_pairs_per_second (one GPU's speed) and its startup_seconds (provisioning and
-- loading the model); the dataset gives N = total_training_pairs; the hyperparameters give
-- E = epochs and B = batch_size (their defaults, 3 and 8, when absent); G = gpu_count.
--
--   steps   = E x ceil(N / (B x G))              each step, every GPU takes a batch of B pairs
--   seconds = startup_seconds + steps x B / training_pairs_per_second
--   estimated_total_cost = round(hourly_rate x G x seconds / 3600, 4)
--
-- It is billing's formula (hourly rate x gpu_count x hours) with the hours predicted. Once the
-- job runs, the processor replaces it with the running cost extrapolated from progress.

-- === GPU speed as data ==========================================================================

alter table public.gpu_prices
  add column training_pairs_per_second numeric(8, 2) not null default 1
    check (training_pairs_per_second > 0),
  add column startup_seconds integer not null default 300
    check (startup_seconds between 0 and 86400);

comment on column public.gpu_prices.training_pairs_per_second is
  'Training pairs one GPU of this type trains on per second (LoRA on a 7-8B model, ~512-token '
  'pairs); estimates a job''s hours. The default, 1, is deliberately slow: a type added without '
  'its own figure is over- rather than under-estimated.';
comment on column public.gpu_prices.startup_seconds is
  'Seconds a run spends before its first step (provisioning, loading the model), billed like '
  'the rest; part of a job''s estimated hours.';

-- Rough figures for the seeded types: the cluster simulator's tokens per second / 512.
update public.gpu_prices p
set training_pairs_per_second = v.pairs_per_second
from (values ('H100', 10.0), ('A100-80GB', 6.0), ('A100', 6.0), ('L40S', 5.0), ('A10G', 2.2),
             ('L4', 1.8), ('T4', 0.8)) v (gpu_type, pairs_per_second)
where p.gpu_type = v.gpu_type;

-- === the hyperparameters a user may set =========================================================

-- The schema of training_jobs.hyperparameters for jobs users create: one row per setting, with
-- its kind, bounds and what applies when it is left out. Names and defaults are the trainer's
-- (trainer/config.py; tests/database/test_job_creation.py holds the two together); the bounds
-- are narrower where a user should not go further. `max_cost` is the processor's: a job that
-- reaches it is cancelled.
--
-- kind: integer (a whole number written as one: 3, not 3.0 or "3"), number, boolean, choice
-- (one of `choices`), model_id (a Hugging Face id `org/name` or a plain name: letters, digits,
-- '-', '_' and '.', at most 96 characters a part, no '..' or '--', so never a path), modules
-- ("all-linear" or 1 to 64 module names of at most 64 characters: letters, digits, '_', '.').
-- default_value: what the trainer uses when the key is absent; NULL where that is not one value
-- (the description says what happens). A JSON null is refused: leave a setting out instead.
create function public.training_job_hyperparameter_rules()
returns table (
  name text,
  kind text,
  minimum numeric,
  maximum numeric,
  exclusive_minimum boolean,
  choices text[],
  default_value jsonb,
  description text
)
language sql
immutable
set search_path = ''
as $$
  select * from (values
    ('epochs', 'integer', 1::numeric, 100::numeric, false, null::text[], '3'::jsonb,
     'passes over the dataset'),
    ('learning_rate', 'number', 0, 0.01, true, null, '0.0002',
     'peak learning rate'),
    ('batch_size', 'integer', 1, 512, false, null, '8',
     'training pairs a GPU takes a step'),
    ('lora_r', 'integer', 1, 256, false, null, '16',
     'rank of the LoRA matrices'),
    ('lora_alpha', 'integer', 1, 1024, false, null, '32',
     'LoRA scaling (alpha / r)'),
    ('lora_dropout', 'number', 0, 0.5, false, null, '0.05',
     'dropout on the LoRA layers'),
    ('base_model', 'model_id', 1, 193, false, null, null,
     'Hugging Face model id to adapt; absent: the cluster''s default model'),
    ('max_cost', 'number', 0, null, true, null, null,
     'budget in the GPU price''s currency: the job is cancelled when its cost reaches it; absent: no budget'),
    ('gradient_accumulation_steps', 'integer', 1, 1024, false, null, '1',
     'steps whose gradients make one optimizer update'),
    ('warmup_steps', 'integer', 0, 100000, false, null, null,
     'learning-rate warmup in steps; absent: 5% of the steps'),
    ('max_seq_length', 'integer', 8, 131072, false, null, '1024',
     'tokens a training pair; longer ones are cut'),
    ('seed', 'integer', 0, 2147483647, false, null, '42',
     'random seed'),
    ('target_modules', 'modules', 1, 64, false, null, null,
     'modules LoRA adapts, or "all-linear"; absent: peft''s choice for the architecture'),
    ('eval_every_steps', 'integer', 1, 1000000, false, null, null,
     'steps between validation losses; absent: twice an epoch'),
    ('checkpoint_every_steps', 'integer', 1, 1000000, false, null, '100',
     'steps between checkpoints'),
    ('gradient_checkpointing', 'boolean', null, null, false, null, 'false',
     'trade compute for memory'),
    ('lr_scheduler', 'choice', null, null, false, array['cosine', 'linear', 'constant'], '"cosine"',
     'learning-rate schedule after warmup')
  ) r (name, kind, minimum, maximum, exclusive_minimum, choices, default_value, description)
$$;

comment on function public.training_job_hyperparameter_rules() is
  'The hyperparameters a user may give a training job: kind, bounds, default, description.';

-- A JSON value as a message shows it, cut short: `not 5`, `not "3"`, `not null`.
create function lora_private.shown_json(value jsonb) returns text
language sql
immutable
set search_path = ''
as $$
  select case
    when value is null then 'missing'
    when length(value::text) > 60 then left(value::text, 60) || '...'
    else value::text
  end
$$;

-- NULL when the hyperparameters follow the schema above; else the first problem, as a message
-- for the user (keys in alphabetical order, unknown keys first).
create function public.training_job_hyperparameters_error(p_hyperparameters jsonb) returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  rule record;
  unknown text;
  v jsonb;
  n numeric;
  kind_ok boolean;
begin
  if p_hyperparameters is null or jsonb_typeof(p_hyperparameters) <> 'object' then
    return format('hyperparameters must be a JSON object of training settings, not %s',
                  lora_private.shown_json(p_hyperparameters));
  end if;

  select k into unknown
  from jsonb_object_keys(p_hyperparameters) k
  where k not in (select r.name from public.training_job_hyperparameter_rules() r)
  order by k collate "C"
  limit 1;
  if unknown is not null then
    return format('hyperparameters.%s is not a known setting; the allowed ones are %s',
                  case when length(unknown) > 60 then left(unknown, 60) || '...' else unknown end,
                  (select string_agg(r.name, ', ' order by r.name collate "C")
                   from public.training_job_hyperparameter_rules() r));
  end if;

  for rule in
    select r.* from public.training_job_hyperparameter_rules() r
    where p_hyperparameters ? r.name
    order by r.name collate "C"
  loop
    v := p_hyperparameters -> rule.name;
    case rule.kind
      when 'integer', 'number' then
        n := case when jsonb_typeof(v) = 'number' then (v #>> '{}')::numeric end;
        -- An integer is written as one: 3, not 3.0.
        kind_ok := rule.kind = 'number' or (v #>> '{}') ~ '^-?[0-9]+$';
        if n is null or not kind_ok
           or (rule.exclusive_minimum and n <= rule.minimum)
           or (not rule.exclusive_minimum and n < rule.minimum)
           or n > rule.maximum then
          return format('hyperparameters.%s must be %s, not %s', rule.name,
            case
              when rule.kind = 'integer' then
                format('a whole number from %s to %s', rule.minimum, rule.maximum)
              when rule.exclusive_minimum and rule.maximum is null then
                format('a number greater than %s', rule.minimum)
              when rule.exclusive_minimum then
                format('a number greater than %s and at most %s', rule.minimum, rule.maximum)
              else format('a number from %s to %s', rule.minimum, rule.maximum)
            end,
            lora_private.shown_json(v));
        end if;
      when 'boolean' then
        if jsonb_typeof(v) <> 'boolean' then
          return format('hyperparameters.%s must be true or false, not %s', rule.name,
                        lora_private.shown_json(v));
        end if;
      when 'choice' then
        if jsonb_typeof(v) <> 'string' or not (v #>> '{}') = any(rule.choices) then
          return format('hyperparameters.%s must be one of %s, not %s', rule.name,
                        (select string_agg(format('"%s"', c), ', ') from unnest(rule.choices) c),
                        lora_private.shown_json(v));
        end if;
      when 'model_id' then
        if jsonb_typeof(v) <> 'string'
           or length(v #>> '{}') > rule.maximum
           or (v #>> '{}') !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$'
           or (v #>> '{}') ~ '(\.\.|--)' then
          return format('hyperparameters.%s must be a Hugging Face model id such as '
                        '"org/name" or a plain name (letters, digits, ''-'', ''_'' and ''.'', '
                        'at most 96 characters a part), not %s',
                        rule.name, lora_private.shown_json(v));
        end if;
      when 'modules' then
        if not (v = '"all-linear"'::jsonb
                or (jsonb_typeof(v) = 'array'
                    and jsonb_array_length(v) between rule.minimum and rule.maximum
                    and not exists (
                      select from jsonb_array_elements(v) m
                      where jsonb_typeof(m) <> 'string'
                         or (m #>> '{}') !~ '^[A-Za-z_][A-Za-z0-9_.]{0,63}$'))) then
          return format('hyperparameters.%s must be "all-linear" or a list of %s to %s module '
                        'names (letters, digits, ''_'' and ''.'', at most 64 characters each), '
                        'not %s', rule.name, rule.minimum, rule.maximum,
                        lora_private.shown_json(v));
        end if;
    end case;
  end loop;

  return null;
end;
$$;

comment on function public.training_job_hyperparameters_error(jsonb) is
  'NULL when the hyperparameters follow training_job_hyperparameter_rules(); else why not.';

-- === the GPU a user may ask for =================================================================

-- NULL when gpu_config names a GPU type with a price and a whole gpu_count from 1 to 8; else the
-- problem, as a message for the user. (The table allows up to 64 GPUs for the backend's jobs.)
create function public.training_job_gpu_config_error(p_gpu_config jsonb) returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  unknown text;
  priced text;
  gpu_count jsonb := p_gpu_config -> 'gpu_count';
begin
  if p_gpu_config is null or jsonb_typeof(p_gpu_config) <> 'object' then
    return format('gpu_config must be a JSON object such as {"gpu_type": "A100", "gpu_count": 1}, '
                  'not %s', lora_private.shown_json(p_gpu_config));
  end if;

  select k into unknown
  from jsonb_object_keys(p_gpu_config) k
  where k not in ('gpu_type', 'gpu_count')
  order by k collate "C"
  limit 1;
  if unknown is not null then
    return format('gpu_config.%s is not a known setting; the allowed ones are gpu_count, gpu_type',
                  case when length(unknown) > 60 then left(unknown, 60) || '...' else unknown end);
  end if;

  if not exists (select from public.gpu_prices p
                 where jsonb_typeof(p_gpu_config -> 'gpu_type') = 'string'
                   and p.gpu_type = p_gpu_config ->> 'gpu_type') then
    select string_agg(p.gpu_type, ', ' order by p.gpu_type collate "C") into priced from public.gpu_prices p;
    return format('gpu_config.gpu_type must be one of the GPU types with a price (%s), not %s',
                  coalesce(priced, 'none yet'),
                  lora_private.shown_json(p_gpu_config -> 'gpu_type'));
  end if;

  if jsonb_typeof(gpu_count) is distinct from 'number' or (gpu_count #>> '{}') !~ '^[1-8]$' then
    return format('gpu_config.gpu_count must be a whole number from 1 to 8, not %s',
                  lora_private.shown_json(gpu_count));
  end if;

  return null;
end;
$$;

comment on function public.training_job_gpu_config_error(jsonb) is
  'NULL when gpu_config names a priced GPU type and a whole gpu_count from 1 to 8; else why not.';

-- === the estimate ===============================================================================

-- The formula at the top of this file. NULL when it cannot be computed: no training pairs, a GPU
-- type without a price, or an epochs, batch_size or gpu_count that is not a positive whole number
-- (the backend's rows are not checked).
create function public.training_job_cost_estimate(
  p_total_training_pairs bigint,
  p_hyperparameters jsonb,
  p_gpu_config jsonb
) returns numeric
language plpgsql
stable
set search_path = ''
as $$
declare
  epochs numeric := 3;
  batch_size numeric := 8;
  gpu_count numeric;
  price public.gpu_prices;
begin
  if p_total_training_pairs is null or p_total_training_pairs <= 0
     or jsonb_typeof(p_hyperparameters) is distinct from 'object'
     or jsonb_typeof(p_gpu_config) is distinct from 'object' then
    return null;
  end if;
  if p_hyperparameters ? 'epochs' then
    epochs := case when (p_hyperparameters -> 'epochs') #>> '{}' ~ '^[1-9][0-9]{0,5}$'
                    and jsonb_typeof(p_hyperparameters -> 'epochs') = 'number'
                   then (p_hyperparameters ->> 'epochs')::numeric end;
  end if;
  if p_hyperparameters ? 'batch_size' then
    batch_size := case when (p_hyperparameters -> 'batch_size') #>> '{}' ~ '^[1-9][0-9]{0,5}$'
                        and jsonb_typeof(p_hyperparameters -> 'batch_size') = 'number'
                       then (p_hyperparameters ->> 'batch_size')::numeric end;
  end if;
  gpu_count := case when (p_gpu_config -> 'gpu_count') #>> '{}' ~ '^[1-9][0-9]?$'
                     and jsonb_typeof(p_gpu_config -> 'gpu_count') = 'number'
                    then (p_gpu_config ->> 'gpu_count')::numeric end;
  select p.gpu_type, p.hourly_rate, p.training_pairs_per_second, p.startup_seconds
  into price.gpu_type, price.hourly_rate, price.training_pairs_per_second, price.startup_seconds
  from public.gpu_prices p where p.gpu_type = p_gpu_config ->> 'gpu_type';
  if epochs is null or batch_size is null or gpu_count is null or price.gpu_type is null then
    return null;
  end if;

  return round(
    price.hourly_rate * gpu_count
      * (price.startup_seconds
         + epochs * ceil(p_total_training_pairs / (batch_size * gpu_count)) * batch_size
           / price.training_pairs_per_second)
      / 3600,
    4);
end;
$$;

comment on function public.training_job_cost_estimate(bigint, jsonb, jsonb) is
  'Estimated cost of a job: hourly_rate x gpu_count x (startup_seconds + epochs x '
  'ceil(pairs / (batch_size x gpu_count)) x batch_size / training_pairs_per_second) / 3600.';

-- === the trigger ================================================================================

-- SECURITY INVOKER: it reads the dataset as the caller, so RLS decides whether it is theirs.
-- Named to run before training_jobs_enforce_state_machine (BEFORE triggers run in name order), so
-- a user's refusal is this trigger's message rather than the state machine's.
create function public.check_new_training_job() returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
declare
  dataset public.datasets;
  problem text;
  estimate numeric;
  -- What numeric(12, 4) holds.
  max_estimate constant numeric := 99999999.9999;
begin
  if not row_security_active('public.training_jobs') then
    -- The backend (service role, owner, superuser): taken as given, with an estimate if it has
    -- none and the data allow one.
    if new.estimated_total_cost is null then
      select d.total_training_pairs into dataset.total_training_pairs
      from public.datasets d where d.id = new.dataset_id;
      estimate := public.training_job_cost_estimate(dataset.total_training_pairs,
                                                    new.hyperparameters, new.gpu_config);
      if estimate <= max_estimate then
        new.estimated_total_cost := estimate;
      end if;
    end if;
    return new;
  end if;

  -- --- who --------------------------------------------------------------------------------------
  if (select auth.uid()) is null then
    raise exception 'Sign in to create a training job.' using errcode = '42501';
  end if;
  if new.user_id is null then
    new.user_id := (select auth.uid());
  elsif new.user_id <> (select auth.uid()) then
    raise exception 'user_id must be your own user id (or left out): a training job is always '
                    'created for the signed-in user.'
      using errcode = '42501';
  end if;

  -- --- what the runner owns ---------------------------------------------------------------------
  problem := case
    when new.status is distinct from 'queued' then 'status'
    when new.current_cost is distinct from 0 then 'current_cost'
    when new.final_cost is not null then 'final_cost'
    when new.estimated_total_cost is not null then 'estimated_total_cost'
    when new.external_job_id is not null then 'external_job_id'
    when new.progress is distinct from 0 then 'progress'
    when new.current_epoch is distinct from 0 then 'current_epoch'
    when new.total_epochs is not null then 'total_epochs'
    when new.current_step is distinct from 0 then 'current_step'
    when new.total_steps is not null then 'total_steps'
    when new.current_metrics is distinct from '{}'::jsonb then 'current_metrics'
  end;
  if problem = 'status' then
    raise exception 'status is set by the training runner: a new training job starts as queued, '
                    'not %; leave status out.', coalesce(new.status::text, 'null')
      using errcode = '42501';
  elsif problem = 'estimated_total_cost' then
    raise exception 'estimated_total_cost is computed by the database from the dataset, the GPU '
                    'and the hyperparameters; leave it out.'
      using errcode = '42501';
  elsif problem is not null then
    raise exception '% is set by the training runner as the job runs; leave it out.', problem
      using errcode = '42501';
  end if;

  -- --- the dataset ------------------------------------------------------------------------------
  if new.dataset_id is null then
    raise exception 'dataset_id is required: the id of the dataset to train on.'
      using errcode = '23502';
  end if;
  -- Named columns, read under the caller's RLS: another user's dataset is not found.
  select d.id, d.user_id, d.name, d.training_ready, d.total_training_pairs
  into dataset.id, dataset.user_id, dataset.name, dataset.training_ready,
       dataset.total_training_pairs
  from public.datasets d where d.id = new.dataset_id;
  if dataset.id is null or dataset.user_id <> new.user_id then
    raise exception 'No such dataset, or it is not yours (dataset_id %).', new.dataset_id
      using errcode = '42501';
  end if;
  if not dataset.training_ready then
    raise exception 'The dataset "%" is not ready for training yet.', dataset.name
      using errcode = '23514',
            hint = 'A dataset can be trained on once its training_ready is true.';
  end if;
  if coalesce(dataset.total_training_pairs, 0) = 0 then
    raise exception 'The dataset "%" has no training pairs counted (total_training_pairs is %).',
                    dataset.name, coalesce(dataset.total_training_pairs::text, 'empty')
      using errcode = '23514';
  end if;

  -- --- the request ------------------------------------------------------------------------------
  problem := public.training_job_gpu_config_error(new.gpu_config);
  if problem is not null then
    raise exception '%', problem using errcode = '22023';
  end if;
  problem := public.training_job_hyperparameters_error(new.hyperparameters);
  if problem is not null then
    raise exception '%', problem using errcode = '22023';
  end if;

  estimate := public.training_job_cost_estimate(dataset.total_training_pairs,
                                                new.hyperparameters, new.gpu_config);
  if estimate > max_estimate then
    raise exception 'This training job would cost an estimated %, more than one job may cost.',
                    estimate
      using errcode = '22023';
  end if;
  new.estimated_total_cost := estimate;

  -- --- the runner's bookkeeping, whatever the request said ----------------------------------------
  new.idempotency_key := null;
  new.attempts := 0;
  new.lease_owner := null;
  new.lease_expires_at := null;
  new.next_poll_at := null;
  new.last_progress_at := null;
  new.cancel_requested_at := null;
  new.cancel_delivered_at := null;
  new.run_started_at := null;
  new.run_ended_at := null;
  new.run_settled_at := null;
  new.lost_contact_since := null;
  new.stalled_since := null;
  new.error_message := null;
  new.artifact_location := null;
  new.estimated_completion_at := null;
  new.started_at := null;
  new.completed_at := null;
  new.created_at := now();
  new.updated_at := now();
  return new;
end;
$$;

create trigger training_jobs_check_new_job
  before insert on public.training_jobs
  for each row execute function public.check_new_training_job();

-- === grants and the policy ======================================================================

revoke execute on function public.training_job_hyperparameter_rules(),
  public.training_job_hyperparameters_error(jsonb),
  public.training_job_gpu_config_error(jsonb),
  public.training_job_cost_estimate(bigint, jsonb, jsonb),
  public.check_new_training_job(),
  lora_private.shown_json(jsonb)
  from public, anon;
-- The trigger runs as the inserting user and calls these; a frontend may call the first four
-- (rpc) to build its form, check a request or show the estimate before creating the job.
grant execute on function public.training_job_hyperparameter_rules(),
  public.training_job_hyperparameters_error(jsonb),
  public.training_job_gpu_config_error(jsonb),
  public.training_job_cost_estimate(bigint, jsonb, jsonb),
  lora_private.shown_json(jsonb)
  to authenticated, service_role;

-- Every column the trigger above handles: taken from the request (id, user_id, dataset_id,
-- hyperparameters, gpu_config), refused unless initial, or set to its initial value. A column
-- added later is not insertable by users until it is granted here and handled there.
grant insert (
  id, user_id, dataset_id, status,
  progress, current_epoch, total_epochs, current_step, total_steps, current_metrics,
  hyperparameters, gpu_config,
  estimated_total_cost, current_cost, final_cost,
  external_job_id, error_message, artifact_location,
  estimated_completion_at, started_at, completed_at, run_started_at, run_ended_at,
  lost_contact_since, run_settled_at, stalled_since, created_at, updated_at,
  idempotency_key, attempts, lease_owner, lease_expires_at, next_poll_at, last_progress_at,
  cancel_requested_at, cancel_delivered_at
) on public.training_jobs to authenticated;

-- The trigger gives the reasons; the policy holds the line on its own as well.
create policy "Users can create training jobs on their own datasets"
  on public.training_jobs for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and status = 'queued'
    and dataset_id in (select d.id from public.datasets d where d.user_id = (select auth.uid()))
  );
