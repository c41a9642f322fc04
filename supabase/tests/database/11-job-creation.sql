-- Creating a training job through the Data API (migration 20261202000300), per actor: a
-- signed-in user inserts a job on their own ready dataset, the database checks the request
-- (SQLSTATE and message for each refusal), computes the estimate and gives every bookkeeping
-- column its initial value; another user cannot use or see it; anon cannot insert; the service
-- role's rows are taken as given.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
-- alice's datasets: ...a11ce ready, 1000 pairs; ...a11c2 not ready; ...a11c3 ready without a
-- pair count; ...a11c4 ready, 2e9 pairs (its estimate on pgtap-slow is beyond what a job may cost).
-- bob's dataset: ...b0b0 ready, 10 pairs.
-- GPU types: pgtap-gpu, 1.50/h, 2 pairs/s, 60 s startup; pgtap-slow, 1.50/h, 0.01 pairs/s.
begin;
create extension if not exists pgtap;
select plan(91);

-- Actors: tests.act_as_user(uuid), tests.act_as_anon(), tests.act_as_service_role(), from
-- 000-test-helpers.sql.

-- Fixtures, as the superuser.
insert into auth.users (id, email) values
  ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test'),
  ('b0b00000-0000-4000-8000-000000000000', 'bob@example.test');

insert into public.gpu_prices (gpu_type, hourly_rate, training_pairs_per_second, startup_seconds)
values ('pgtap-gpu', 1.5, 2, 60), ('pgtap-slow', 1.5, 0.01, 60);

insert into public.datasets (id, user_id, name, storage_path, training_ready, total_training_pairs) values
  ('da7a0000-0000-4000-8000-0000000a11ce', 'a11ce000-0000-4000-8000-000000000000', 'alice data', 'alice/data.jsonl', true, 1000),
  ('da7a0000-0000-4000-8000-0000000a11c2', 'a11ce000-0000-4000-8000-000000000000', 'alice draft', 'alice/draft.jsonl', false, 1000),
  ('da7a0000-0000-4000-8000-0000000a11c3', 'a11ce000-0000-4000-8000-000000000000', 'alice uncounted', 'alice/uncounted.jsonl', true, null),
  ('da7a0000-0000-4000-8000-0000000a11c4', 'a11ce000-0000-4000-8000-000000000000', 'alice huge', 'alice/huge.jsonl', true, 2000000000),
  ('da7a0000-0000-4000-8000-00000000b0b0', 'b0b00000-0000-4000-8000-000000000000', 'bob data', 'bob/data.jsonl', true, 10);

-- An insert by alice of one job on her ready dataset with the given JSON columns: the refusals
-- below differ from a valid request in one value only.
create function pg_temp.alice_job(hyperparameters jsonb, gpu_config jsonb default '{"gpu_type": "pgtap-gpu", "gpu_count": 1}')
returns text language sql as $$
  select format(
    'insert into public.training_jobs (dataset_id, hyperparameters, gpu_config) values (%L, %L, %L)',
    'da7a0000-0000-4000-8000-0000000a11ce', hyperparameters, gpu_config)
$$;

-- === Schema ======================================================================================

select policy_cmd_is('public', 'training_jobs', 'Users can create training jobs on their own datasets', 'insert',
  'training_jobs: "Users can create training jobs on their own datasets" is for INSERT');
select policy_roles_are('public', 'training_jobs', 'Users can create training jobs on their own datasets',
  array['authenticated'],
  'training_jobs: "Users can create training jobs on their own datasets" is for authenticated only');

select set_eq(
  $$ select a.attname::text
     from pg_attribute a
     where a.attrelid = 'public.training_jobs'::regclass and a.attnum > 0 and not a.attisdropped
       and has_column_privilege('authenticated', a.attrelid, a.attnum, 'insert') $$,
  array['id', 'user_id', 'dataset_id', 'status', 'progress', 'current_epoch', 'total_epochs',
        'current_step', 'total_steps', 'current_metrics', 'hyperparameters', 'gpu_config',
        'estimated_total_cost', 'current_cost', 'final_cost', 'external_job_id', 'error_message',
        'artifact_location', 'estimated_completion_at', 'started_at', 'completed_at',
        'run_started_at', 'run_ended_at', 'lost_contact_since', 'run_settled_at', 'stalled_since',
        'created_at', 'updated_at', 'idempotency_key', 'attempts', 'lease_owner',
        'lease_expires_at', 'next_poll_at', 'last_progress_at', 'cancel_requested_at',
        'cancel_delivered_at'],
  'authenticated may insert exactly the columns the creation trigger handles'
);

select ok(
  not has_table_privilege('authenticated', 'public.training_jobs', 'insert'),
  'authenticated has no table-wide INSERT on training_jobs (so a new column starts closed)'
);

select results_eq(
  $$ select gpu_type, training_pairs_per_second, startup_seconds from public.gpu_prices
     where gpu_type in ('H100', 'A100-80GB', 'A100', 'L40S', 'A10G', 'L4', 'T4')
     order by gpu_type collate "C" $$,
  $$ values ('A100', 6.00, 300), ('A100-80GB', 6.00, 300), ('A10G', 2.20, 300), ('H100', 10.00, 300),
            ('L4', 1.80, 300), ('L40S', 5.00, 300), ('T4', 0.80, 300) $$,
  'every seeded GPU type has its own training speed'
);

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

-- Valid, with every bookkeeping column the client may name set to something else.
select lives_ok(
  $$ insert into public.training_jobs (
       id, dataset_id, hyperparameters, gpu_config, status,
       idempotency_key, attempts, lease_owner, lease_expires_at, next_poll_at, last_progress_at,
       cancel_requested_at, cancel_delivered_at, run_started_at, run_ended_at, run_settled_at,
       lost_contact_since, stalled_since, error_message, artifact_location,
       estimated_completion_at, started_at, completed_at, created_at, updated_at)
     values (
       '10b00000-0000-4000-8000-00000000a001', 'da7a0000-0000-4000-8000-0000000a11ce',
       '{"epochs": 2, "batch_size": 16, "learning_rate": 0.0001, "lora_r": 8, "lora_alpha": 16,
         "lora_dropout": 0.1, "base_model": "Qwen/Qwen2.5-0.5B-Instruct", "max_cost": 25,
         "gradient_accumulation_steps": 4, "warmup_steps": 10, "max_seq_length": 2048, "seed": 7,
         "target_modules": ["q_proj", "v_proj"], "eval_every_steps": 50,
         "checkpoint_every_steps": 200, "gradient_checkpointing": true, "lr_scheduler": "linear"}',
       '{"gpu_type": "pgtap-gpu", "gpu_count": 2}', 'queued',
       gen_random_uuid(), 7, gen_random_uuid(), now() + interval '1 hour', now(), now(),
       now(), now(), now() - interval '1 hour', now(), now(),
       now(), now(), 'made up', 's3://somewhere/else/',
       now() + interval '1 hour', now() - interval '1 hour', now(), '2000-01-01', '2000-01-01') $$,
  'owner: creates a job with every hyperparameter, on their own ready dataset'
);

-- 2 epochs x ceil(1000 / (16 x 2)) = 64 steps; 60 s + 64 x 16 / 2 = 572 s; 1.50 x 2 x 572 / 3600.
select results_eq(
  $$ select user_id, status::text, progress, current_epoch, total_epochs, current_step, total_steps,
            current_metrics, current_cost, final_cost, estimated_total_cost, external_job_id,
            error_message, artifact_location, estimated_completion_at, started_at, completed_at,
            run_started_at, run_ended_at, lost_contact_since, stalled_since, last_progress_at,
            cancel_requested_at, created_at, updated_at
     from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a001' $$,
  $$ values ('a11ce000-0000-4000-8000-000000000000'::uuid, 'queued', 0::numeric, 0, null::integer, 0,
             null::integer, '{}'::jsonb, 0::numeric, null::numeric, 0.4767::numeric, null::text,
             null::text, null::text, null::timestamptz, null::timestamptz, null::timestamptz,
             null::timestamptz, null::timestamptz, null::timestamptz, null::timestamptz,
             null::timestamptz, null::timestamptz, now(), now()) $$,
  'owner: reads the job back queued, with initial values and the estimate computed in the database'
);

select results_eq(
  $$ select hyperparameters ->> 'base_model', gpu_config from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000a001' $$,
  $$ values ('Qwen/Qwen2.5-0.5B-Instruct', '{"gpu_type": "pgtap-gpu", "gpu_count": 2}'::jsonb) $$,
  'owner: the hyperparameters and GPU are stored as given'
);

-- No hyperparameters: 3 epochs x ceil(1000 / 8) = 375 steps; 60 s + 375 x 8 / 2 = 1560 s.
select lives_ok(
  $$ insert into public.training_jobs (id, user_id, dataset_id, gpu_config)
     values ('10b00000-0000-4000-8000-00000000a002', 'a11ce000-0000-4000-8000-000000000000',
             'da7a0000-0000-4000-8000-0000000a11ce', '{"gpu_type": "pgtap-gpu", "gpu_count": 1}') $$,
  'owner: creates a job naming their own user_id and no hyperparameters'
);

select results_eq(
  $$ select hyperparameters, estimated_total_cost from public.training_jobs
     where id = '10b00000-0000-4000-8000-00000000a002' $$,
  $$ values ('{}'::jsonb, 0.6500::numeric) $$,
  'owner: the estimate of a job without hyperparameters uses the defaults (3 epochs, batch 8)'
);

select lives_ok(
  $$ insert into public.training_jobs (id, dataset_id)
     values ('10b00000-0000-4000-8000-00000000a003', 'da7a0000-0000-4000-8000-0000000a11ce') $$,
  'owner: creates a job naming only the dataset'
);

select results_eq(
  $$ select user_id, gpu_config, estimated_total_cost = public.training_job_cost_estimate(1000, '{}', gpu_config)
     from public.training_jobs where id = '10b00000-0000-4000-8000-00000000a003' $$,
  $$ values ('a11ce000-0000-4000-8000-000000000000'::uuid, '{"gpu_type": "A100", "gpu_count": 1}'::jsonb, true) $$,
  'owner: a job naming only the dataset is theirs, on the default GPU, with its estimate'
);

select set_eq(
  $$ select id from public.training_jobs $$,
  $$ values ('10b00000-0000-4000-8000-00000000a001'::uuid), ('10b00000-0000-4000-8000-00000000a002'),
            ('10b00000-0000-4000-8000-00000000a003') $$,
  'owner: sees the jobs they created'
);

-- --- who and which dataset ----------------------------------------------------------------------

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id)
     values ('b0b00000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce') $$,
  '42501', 'user_id must be your own user id (or left out): a training job is always created for the signed-in user.',
  'owner: cannot create a job for another user'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id) values ('da7a0000-0000-4000-8000-00000000b0b0') $$,
  '42501', 'No such dataset, or it is not yours (dataset_id da7a0000-0000-4000-8000-00000000b0b0).',
  'owner: cannot train on another user''s dataset'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id) values ('da7a0000-0000-4000-8000-00000000dead') $$,
  '42501', 'No such dataset, or it is not yours (dataset_id da7a0000-0000-4000-8000-00000000dead).',
  'owner: a missing dataset is refused as another user''s is'
);

select throws_ok(
  $$ insert into public.training_jobs (hyperparameters) values ('{}') $$,
  '23502', 'dataset_id is required: the id of the dataset to train on.',
  'owner: a job needs a dataset'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id) values ('da7a0000-0000-4000-8000-0000000a11c2') $$,
  '23514', 'The dataset "alice draft" is not ready for training yet.',
  'owner: cannot train on a dataset that is not ready'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id) values ('da7a0000-0000-4000-8000-0000000a11c3') $$,
  '23514', 'The dataset "alice uncounted" has no training pairs counted (total_training_pairs is empty).',
  'owner: cannot train on a dataset without a pair count'
);

-- --- what the runner owns -----------------------------------------------------------------------

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, status) values ('da7a0000-0000-4000-8000-0000000a11ce', 'running') $$,
  '42501', 'status is set by the training runner: a new training job starts as queued, not running; leave status out.',
  'owner: cannot create a running job'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, status) values ('da7a0000-0000-4000-8000-0000000a11ce', 'completed') $$,
  '42501', 'status is set by the training runner: a new training job starts as queued, not completed; leave status out.',
  'owner: cannot create a completed job'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, current_cost) values ('da7a0000-0000-4000-8000-0000000a11ce', 1) $$,
  '42501', 'current_cost is set by the training runner as the job runs; leave it out.',
  'owner: cannot set the running cost'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, final_cost) values ('da7a0000-0000-4000-8000-0000000a11ce', 0) $$,
  '42501', 'final_cost is set by the training runner as the job runs; leave it out.',
  'owner: cannot set the final cost'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, estimated_total_cost) values ('da7a0000-0000-4000-8000-0000000a11ce', 0.01) $$,
  '42501', 'estimated_total_cost is computed by the database from the dataset, the GPU and the hyperparameters; leave it out.',
  'owner: cannot set the estimate'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, external_job_id) values ('da7a0000-0000-4000-8000-0000000a11ce', 'ext-1') $$,
  '42501', 'external_job_id is set by the training runner as the job runs; leave it out.',
  'owner: cannot set the cluster''s job id'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, progress) values ('da7a0000-0000-4000-8000-0000000a11ce', 50) $$,
  '42501', 'progress is set by the training runner as the job runs; leave it out.',
  'owner: cannot set progress'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, current_step) values ('da7a0000-0000-4000-8000-0000000a11ce', 10) $$,
  '42501', 'current_step is set by the training runner as the job runs; leave it out.',
  'owner: cannot set the current step'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, total_epochs) values ('da7a0000-0000-4000-8000-0000000a11ce', 3) $$,
  '42501', 'total_epochs is set by the training runner as the job runs; leave it out.',
  'owner: cannot set the total epochs (hyperparameters.epochs says how many)'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, current_metrics) values ('da7a0000-0000-4000-8000-0000000a11ce', '{"loss": 0}') $$,
  '42501', 'current_metrics is set by the training runner as the job runs; leave it out.',
  'owner: cannot set metrics'
);

-- --- the GPU ------------------------------------------------------------------------------------

select throws_ok(
  pg_temp.alice_job('{}', '{"gpu_type": "B200", "gpu_count": 1}'),
  '22023',
  (select format('gpu_config.gpu_type must be one of the GPU types with a price (%s), not "B200"',
                 string_agg(gpu_type, ', ' order by gpu_type collate "C"))
   from public.gpu_prices),
  'owner: cannot ask for a GPU type without a price'
);

select throws_ok(pg_temp.alice_job('{}', '{"gpu_type": "pgtap-gpu", "gpu_count": 0}'),
  '22023', 'gpu_config.gpu_count must be a whole number from 1 to 8, not 0',
  'owner: cannot ask for 0 GPUs');
select throws_ok(pg_temp.alice_job('{}', '{"gpu_type": "pgtap-gpu", "gpu_count": 9}'),
  '22023', 'gpu_config.gpu_count must be a whole number from 1 to 8, not 9',
  'owner: cannot ask for 9 GPUs');
select throws_ok(pg_temp.alice_job('{}', '{"gpu_type": "pgtap-gpu", "gpu_count": 2.5}'),
  '22023', 'gpu_config.gpu_count must be a whole number from 1 to 8, not 2.5',
  'owner: cannot ask for 2.5 GPUs');
select throws_ok(pg_temp.alice_job('{}', '{"gpu_type": "pgtap-gpu", "gpu_count": "2"}'),
  '22023', 'gpu_config.gpu_count must be a whole number from 1 to 8, not "2"',
  'owner: cannot give the GPU count as a string');
select throws_ok(pg_temp.alice_job('{}', '{"gpu_type": "pgtap-gpu"}'),
  '22023', 'gpu_config.gpu_count must be a whole number from 1 to 8, not missing',
  'owner: cannot leave out the GPU count');
select throws_ok(pg_temp.alice_job('{}', '{"gpu_type": "pgtap-gpu", "gpu_count": 1, "vram": 80}'),
  '22023', 'gpu_config.vram is not a known setting; the allowed ones are gpu_count, gpu_type',
  'owner: cannot add unknown GPU settings');
select throws_ok(pg_temp.alice_job('{}', '"pgtap-gpu"'),
  '22023', 'gpu_config must be a JSON object such as {"gpu_type": "A100", "gpu_count": 1}, not "pgtap-gpu"',
  'owner: gpu_config must be an object');

-- --- the hyperparameters, one wrong value each ---------------------------------------------------

select throws_ok(pg_temp.alice_job('{"epochs": 0}'), '22023',
  'hyperparameters.epochs must be a whole number from 1 to 100, not 0', 'owner: epochs 0');
select throws_ok(pg_temp.alice_job('{"epochs": 101}'), '22023',
  'hyperparameters.epochs must be a whole number from 1 to 100, not 101', 'owner: epochs 101');
select throws_ok(pg_temp.alice_job('{"epochs": 2.5}'), '22023',
  'hyperparameters.epochs must be a whole number from 1 to 100, not 2.5', 'owner: epochs 2.5');
select throws_ok(pg_temp.alice_job('{"epochs": "3"}'), '22023',
  'hyperparameters.epochs must be a whole number from 1 to 100, not "3"', 'owner: epochs as a string');
select throws_ok(pg_temp.alice_job('{"learning_rate": 0}'), '22023',
  'hyperparameters.learning_rate must be a number greater than 0 and at most 0.01, not 0', 'owner: learning_rate 0');
select throws_ok(pg_temp.alice_job('{"learning_rate": 5}'), '22023',
  'hyperparameters.learning_rate must be a number greater than 0 and at most 0.01, not 5', 'owner: learning_rate 5');
select throws_ok(pg_temp.alice_job('{"batch_size": 0}'), '22023',
  'hyperparameters.batch_size must be a whole number from 1 to 512, not 0', 'owner: batch_size 0');
select throws_ok(pg_temp.alice_job('{"batch_size": 513}'), '22023',
  'hyperparameters.batch_size must be a whole number from 1 to 512, not 513', 'owner: batch_size 513');
select throws_ok(pg_temp.alice_job('{"lora_r": 0}'), '22023',
  'hyperparameters.lora_r must be a whole number from 1 to 256, not 0', 'owner: lora_r 0');
select throws_ok(pg_temp.alice_job('{"lora_r": 257}'), '22023',
  'hyperparameters.lora_r must be a whole number from 1 to 256, not 257', 'owner: lora_r 257');
select throws_ok(pg_temp.alice_job('{"lora_alpha": 0}'), '22023',
  'hyperparameters.lora_alpha must be a whole number from 1 to 1024, not 0', 'owner: lora_alpha 0');
select throws_ok(pg_temp.alice_job('{"lora_alpha": 1025}'), '22023',
  'hyperparameters.lora_alpha must be a whole number from 1 to 1024, not 1025', 'owner: lora_alpha 1025');
select throws_ok(pg_temp.alice_job('{"lora_dropout": -0.1}'), '22023',
  'hyperparameters.lora_dropout must be a number from 0 to 0.5, not -0.1', 'owner: lora_dropout -0.1');
select throws_ok(pg_temp.alice_job('{"lora_dropout": 0.6}'), '22023',
  'hyperparameters.lora_dropout must be a number from 0 to 0.5, not 0.6', 'owner: lora_dropout 0.6');
select throws_ok(pg_temp.alice_job('{"base_model": "../../etc/passwd"}'), '22023',
  'hyperparameters.base_model must be a Hugging Face model id such as "org/name" or a plain name (letters, digits, ''-'', ''_'' and ''.'', at most 96 characters a part), not "../../etc/passwd"',
  'owner: base_model as a path');
select throws_ok(pg_temp.alice_job('{"base_model": "org/a..b"}'), '22023',
  'hyperparameters.base_model must be a Hugging Face model id such as "org/name" or a plain name (letters, digits, ''-'', ''_'' and ''.'', at most 96 characters a part), not "org/a..b"',
  'owner: base_model with ..');
select throws_ok(pg_temp.alice_job('{"base_model": "/models/llama"}'), '22023',
  'hyperparameters.base_model must be a Hugging Face model id such as "org/name" or a plain name (letters, digits, ''-'', ''_'' and ''.'', at most 96 characters a part), not "/models/llama"',
  'owner: base_model as an absolute path');
select throws_ok(pg_temp.alice_job(jsonb_build_object('base_model', 'org/' || repeat('m', 97))), '22023',
  'hyperparameters.base_model must be a Hugging Face model id such as "org/name" or a plain name (letters, digits, ''-'', ''_'' and ''.'', at most 96 characters a part), not "org/' || repeat('m', 55) || '...',
  'owner: base_model too long (and the message cuts the value short)');
select throws_ok(pg_temp.alice_job('{"max_cost": 0}'), '22023',
  'hyperparameters.max_cost must be a number greater than 0, not 0', 'owner: max_cost 0');
select throws_ok(pg_temp.alice_job('{"max_cost": null}'), '22023',
  'hyperparameters.max_cost must be a number greater than 0, not null', 'owner: max_cost null');
select throws_ok(pg_temp.alice_job('{"gradient_accumulation_steps": 0}'), '22023',
  'hyperparameters.gradient_accumulation_steps must be a whole number from 1 to 1024, not 0',
  'owner: gradient_accumulation_steps 0');
select throws_ok(pg_temp.alice_job('{"warmup_steps": -1}'), '22023',
  'hyperparameters.warmup_steps must be a whole number from 0 to 100000, not -1', 'owner: warmup_steps -1');
select throws_ok(pg_temp.alice_job('{"max_seq_length": 4}'), '22023',
  'hyperparameters.max_seq_length must be a whole number from 8 to 131072, not 4', 'owner: max_seq_length 4');
select throws_ok(pg_temp.alice_job('{"seed": -1}'), '22023',
  'hyperparameters.seed must be a whole number from 0 to 2147483647, not -1', 'owner: seed -1');
select throws_ok(pg_temp.alice_job('{"target_modules": []}'), '22023',
  'hyperparameters.target_modules must be "all-linear" or a list of 1 to 64 module names (letters, digits, ''_'' and ''.'', at most 64 characters each), not []',
  'owner: target_modules empty');
select throws_ok(pg_temp.alice_job('{"target_modules": ["q_proj", "v proj"]}'), '22023',
  'hyperparameters.target_modules must be "all-linear" or a list of 1 to 64 module names (letters, digits, ''_'' and ''.'', at most 64 characters each), not ["q_proj", "v proj"]',
  'owner: target_modules with a name that is no identifier');
select throws_ok(pg_temp.alice_job('{"eval_every_steps": 0}'), '22023',
  'hyperparameters.eval_every_steps must be a whole number from 1 to 1000000, not 0', 'owner: eval_every_steps 0');
select throws_ok(pg_temp.alice_job('{"checkpoint_every_steps": 0}'), '22023',
  'hyperparameters.checkpoint_every_steps must be a whole number from 1 to 1000000, not 0',
  'owner: checkpoint_every_steps 0');
select throws_ok(pg_temp.alice_job('{"gradient_checkpointing": "yes"}'), '22023',
  'hyperparameters.gradient_checkpointing must be true or false, not "yes"', 'owner: gradient_checkpointing "yes"');
select throws_ok(pg_temp.alice_job('{"lr_scheduler": "step"}'), '22023',
  'hyperparameters.lr_scheduler must be one of "cosine", "linear", "constant", not "step"', 'owner: lr_scheduler "step"');
select throws_ok(pg_temp.alice_job('{"epochs": 3, "lora_rank": 8}'), '22023',
  'hyperparameters.lora_rank is not a known setting; the allowed ones are base_model, batch_size, checkpoint_every_steps, epochs, eval_every_steps, gradient_accumulation_steps, gradient_checkpointing, learning_rate, lora_alpha, lora_dropout, lora_r, lr_scheduler, max_cost, max_seq_length, seed, target_modules, warmup_steps',
  'owner: an unknown key is refused with the allowed ones listed');
select throws_ok(pg_temp.alice_job('[1, 2]'), '22023',
  'hyperparameters must be a JSON object of training settings, not [1, 2]', 'owner: hyperparameters must be an object');

select lives_ok(pg_temp.alice_job('{"target_modules": "all-linear", "lr_scheduler": "constant", "epochs": 100, "learning_rate": 0.01, "lora_dropout": 0, "base_model": "gpt2"}'),
  'owner: the bounds themselves are allowed, as are "all-linear", "constant" and a plain model name');

select throws_ok(
  $$ insert into public.training_jobs (dataset_id, gpu_config, hyperparameters)
     values ('da7a0000-0000-4000-8000-0000000a11c4', '{"gpu_type": "pgtap-slow", "gpu_count": 8}', '{"epochs": 100}') $$,
  '22023', 'This training job would cost an estimated 8333333333.5333, more than one job may cost.',
  'owner: a job whose estimate is beyond what one job may cost is refused'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select is_empty(
  $$ select id from public.training_jobs where user_id = 'a11ce000-0000-4000-8000-000000000000' $$,
  'another user: sees none of alice''s jobs'
);

select throws_ok(
  $$ insert into public.training_jobs (dataset_id) values ('da7a0000-0000-4000-8000-0000000a11ce') $$,
  '42501', 'No such dataset, or it is not yours (dataset_id da7a0000-0000-4000-8000-0000000a11ce).',
  'another user: cannot train on alice''s dataset'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-00000000b0b0') $$,
  '42501', 'user_id must be your own user id (or left out): a training job is always created for the signed-in user.',
  'another user: cannot create a job in alice''s name'
);

select lives_ok(
  $$ insert into public.training_jobs (id, dataset_id, gpu_config)
     values ('10b00000-0000-4000-8000-00000000b001', 'da7a0000-0000-4000-8000-00000000b0b0',
             '{"gpu_type": "pgtap-gpu", "gpu_count": 1}') $$,
  'another user: creates a job on their own dataset'
);

select results_eq(
  $$ select id, user_id from public.training_jobs $$,
  $$ values ('10b00000-0000-4000-8000-00000000b001'::uuid, 'b0b00000-0000-4000-8000-000000000000'::uuid) $$,
  'another user: sees only their own job'
);

-- === Anonymous ===================================================================================
reset role;
select tests.act_as_anon();

select throws_ok(
  $$ insert into public.training_jobs (dataset_id) values ('da7a0000-0000-4000-8000-0000000a11ce') $$,
  '42501', 'permission denied for table training_jobs',
  'anon: cannot create a job'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce') $$,
  '42501', 'permission denied for table training_jobs',
  'anon: cannot create a job in alice''s name'
);

select throws_ok(
  $$ select public.training_job_cost_estimate(1000, '{}', '{"gpu_type": "pgtap-gpu", "gpu_count": 1}') $$,
  '42501', 'permission denied for function training_job_cost_estimate',
  'anon: cannot call the estimate'
);

select throws_ok(
  $$ select * from public.training_job_hyperparameter_rules() $$,
  '42501', 'permission denied for function training_job_hyperparameter_rules',
  'anon: cannot read the hyperparameter rules'
);

-- === The helpers a frontend may call, as a signed-in user =========================================
reset role;
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select results_eq(
  $$ select name, default_value from public.training_job_hyperparameter_rules()
     where name in ('epochs', 'batch_size', 'learning_rate', 'lr_scheduler', 'base_model')
     order by name collate "C" $$,
  $$ values ('base_model', null::jsonb), ('batch_size', '8'::jsonb), ('epochs', '3'::jsonb),
            ('learning_rate', '0.0002'::jsonb), ('lr_scheduler', '"cosine"'::jsonb) $$,
  'signed-in user: reads the hyperparameter rules with their defaults'
);

select is(public.training_job_hyperparameters_error('{"epochs": 3}'), null,
  'signed-in user: checks valid hyperparameters');
select is(public.training_job_hyperparameters_error('{"learning_rate": 5}'),
  'hyperparameters.learning_rate must be a number greater than 0 and at most 0.01, not 5',
  'signed-in user: learns what is wrong with invalid hyperparameters');
select is(public.training_job_gpu_config_error('{"gpu_type": "pgtap-gpu", "gpu_count": 8}'), null,
  'signed-in user: checks a valid GPU request');
select is(public.training_job_cost_estimate(1000, '{"epochs": 2, "batch_size": 16}', '{"gpu_type": "pgtap-gpu", "gpu_count": 2}'),
  0.4767::numeric, 'signed-in user: computes an estimate before creating the job');

-- === Service role ================================================================================
reset role;
-- How many jobs the users created, to compare with what the service role sees.
select set_config('tests.created_jobs', (select count(*)::text from public.training_jobs
  where user_id in ('a11ce000-0000-4000-8000-000000000000', 'b0b00000-0000-4000-8000-000000000000')), true);
select tests.act_as_service_role();

select results_eq(
  $$ select count(*)::text, count(*) filter (where user_id = 'b0b00000-0000-4000-8000-000000000000')::int
     from public.training_jobs
     where user_id in ('a11ce000-0000-4000-8000-000000000000', 'b0b00000-0000-4000-8000-000000000000') $$,
  $$ values (current_setting('tests.created_jobs'), 1) $$,
  'service role: sees every job the users created, alice''s and bob''s'
);

select lives_ok(
  $$ insert into public.training_jobs (id, user_id, dataset_id, hyperparameters, gpu_config, attempts)
     values ('10b00000-0000-4000-8000-00000000c001', 'a11ce000-0000-4000-8000-000000000000',
             'da7a0000-0000-4000-8000-0000000a11c2', '{"lora_rank": 8, "epochs": 1000}',
             '{"gpu_type": "pgtap-gpu", "gpu_count": 16}', 2) $$,
  'service role: creates a job the checks would refuse a user (not-ready dataset, 16 GPUs, unknown key)'
);

select results_eq(
  $$ select user_id, hyperparameters, gpu_config, attempts, estimated_total_cost
     from public.training_jobs where id = '10b00000-0000-4000-8000-00000000c001' $$,
  $$ values ('a11ce000-0000-4000-8000-000000000000'::uuid, '{"lora_rank": 8, "epochs": 1000}'::jsonb,
             '{"gpu_type": "pgtap-gpu", "gpu_count": 16}'::jsonb, 2,
             public.training_job_cost_estimate(1000, '{"lora_rank": 8, "epochs": 1000}', '{"gpu_type": "pgtap-gpu", "gpu_count": 16}')) $$,
  'service role: the job is stored as given, with the estimate filled in'
);

select lives_ok(
  $$ insert into public.training_jobs (id, user_id, dataset_id, estimated_total_cost)
     values ('10b00000-0000-4000-8000-00000000c002', 'a11ce000-0000-4000-8000-000000000000',
             'da7a0000-0000-4000-8000-0000000a11c3', 12.5),
            ('10b00000-0000-4000-8000-00000000c003', 'a11ce000-0000-4000-8000-000000000000',
             'da7a0000-0000-4000-8000-0000000a11c3', null) $$,
  'service role: creates jobs with and without an estimate of its own'
);

select results_eq(
  $$ select id, estimated_total_cost from public.training_jobs
     where id in ('10b00000-0000-4000-8000-00000000c002', '10b00000-0000-4000-8000-00000000c003')
     order by id $$,
  $$ values ('10b00000-0000-4000-8000-00000000c002'::uuid, 12.5::numeric),
            ('10b00000-0000-4000-8000-00000000c003', null) $$,
  'service role: its own estimate is kept; none is made up without a pair count'
);

select throws_ok(
  $$ insert into public.training_jobs (user_id, dataset_id, status)
     values ('a11ce000-0000-4000-8000-000000000000', 'da7a0000-0000-4000-8000-0000000a11ce', 'running') $$,
  'PT409', 'a new training job must start as queued, not running',
  'service role: the state machine still applies'
);

select * from finish();
rollback;
