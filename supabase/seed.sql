-- Demo data for `make dev` (and `supabase db reset`): one user, a dataset in each bucket, and a
-- queued job on each, so a freshly started stack has something to train.

insert into auth.users (id, email, raw_user_meta_data)
values ('00000000-0000-4000-8000-00000000d3e0', 'demo@example.com', '{"name": "Demo user"}')
on conflict (id) do nothing;

insert into public.datasets
  (id, user_id, name, description, storage_bucket, storage_path, training_ready, total_training_pairs)
values
  ('00000000-0000-4000-8000-0000000da7a1', '00000000-0000-4000-8000-00000000d3e0',
   'Support replies', 'Customer-support answers in the house style', null,
   'demo/lora-demo-200.jsonl', true, 200),
  ('00000000-0000-4000-8000-0000000da7a2', '00000000-0000-4000-8000-00000000d3e0',
   'Product FAQ (imported)', 'Imported by the data bridge', 'training-files',
   'imports/lora-demo-200.jsonl', true, 200)
on conflict (id) do nothing;

insert into public.training_jobs (id, user_id, dataset_id, total_epochs, hyperparameters, gpu_config)
values
  ('00000000-0000-4000-8000-000000000b01', '00000000-0000-4000-8000-00000000d3e0',
   '00000000-0000-4000-8000-0000000da7a1', 3,
   '{"learning_rate": 0.0002, "epochs": 3, "batch_size": 8, "lora_r": 16, "lora_alpha": 32}',
   '{"gpu_type": "A100", "gpu_count": 1}'),
  ('00000000-0000-4000-8000-000000000b02', '00000000-0000-4000-8000-00000000d3e0',
   '00000000-0000-4000-8000-0000000da7a2', 2,
   '{"learning_rate": 0.0001, "epochs": 2, "batch_size": 4, "lora_r": 8, "lora_alpha": 16}',
   '{"gpu_type": "L4", "gpu_count": 2}')
on conflict (id) do nothing;
