-- notifications: owners read their own notifications and may mark them read (the `read` column,
-- nothing else); other users and anon get nothing; the service role does everything, once per
-- dedupe key.
--
-- Users: alice (the owner) a11ce000-..., bob (another user) b0b00000-...
begin;
create extension if not exists pgtap;
select plan(24);

-- Actors: tests.act_as_user(uuid), tests.act_as_anon(), tests.act_as_service_role(), from
-- 000-test-helpers.sql.

-- Fixtures, as the superuser.
insert into auth.users (id, email) values
  ('a11ce000-0000-4000-8000-000000000000', 'alice@example.test'),
  ('b0b00000-0000-4000-8000-000000000000', 'bob@example.test');

insert into public.notifications (id, user_id, type, title, message) values
  ('9071f000-0000-4000-8000-00000000a001', 'a11ce000-0000-4000-8000-000000000000',
   'training_completed', 'Training completed', 'Your LoRA training finished.'),
  ('9071f000-0000-4000-8000-00000000a002', 'a11ce000-0000-4000-8000-000000000000',
   'training_failed', 'Training failed', 'Your LoRA training failed.'),
  ('9071f000-0000-4000-8000-00000000b001', 'b0b00000-0000-4000-8000-000000000000',
   'training_completed', 'Training completed', 'Your LoRA training finished.');

-- === Owner (alice) ===============================================================================
select tests.act_as_user('a11ce000-0000-4000-8000-000000000000');

select set_eq(
  $$ select id from public.notifications $$,
  $$ values ('9071f000-0000-4000-8000-00000000a001'::uuid), ('9071f000-0000-4000-8000-00000000a002') $$,
  'owner: sees exactly their own notifications'
);

select results_eq(
  $$ with u as (update public.notifications set read = true
                where id = '9071f000-0000-4000-8000-00000000a001' returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'owner: marks their notification read'
);

select results_eq(
  $$ select id, read from public.notifications order by id $$,
  $$ values ('9071f000-0000-4000-8000-00000000a001'::uuid, true),
            ('9071f000-0000-4000-8000-00000000a002', false) $$,
  'owner: that notification, and only that one, is read'
);

select throws_ok(
  $$ update public.notifications set read = true, title = 'Nothing happened'
     where id = '9071f000-0000-4000-8000-00000000a002' $$,
  '42501', 'permission denied for table notifications',
  'owner: cannot change a notification''s text'
);

select throws_ok(
  $$ update public.notifications set user_id = 'b0b00000-0000-4000-8000-000000000000'
     where id = '9071f000-0000-4000-8000-00000000a002' $$,
  '42501', 'permission denied for table notifications',
  'owner: cannot hand a notification to another user'
);

select throws_ok(
  $$ insert into public.notifications (user_id, type, title, message)
     values ('a11ce000-0000-4000-8000-000000000000', 'training_completed', 'Fake', 'Fake') $$,
  '42501', 'permission denied for table notifications',
  'owner: cannot create a notification'
);

select throws_ok(
  $$ delete from public.notifications where id = '9071f000-0000-4000-8000-00000000a002' $$,
  '42501', 'permission denied for table notifications',
  'owner: cannot delete a notification'
);

-- === Another user (bob) ==========================================================================
reset role;
select tests.act_as_user('b0b00000-0000-4000-8000-000000000000');

select results_eq(
  $$ select id from public.notifications $$,
  $$ values ('9071f000-0000-4000-8000-00000000b001'::uuid) $$,
  'another user: sees only their own notification, none of alice''s'
);

select results_eq(
  $$ with u as (update public.notifications set read = true
                where id = '9071f000-0000-4000-8000-00000000a002' returning 1)
     select count(*)::int from u $$,
  $$ values (0) $$,
  'another user: marking alice''s notification read updates no row'
);

select results_eq(
  $$ with u as (update public.notifications set read = true returning id)
     select id from u $$,
  $$ values ('9071f000-0000-4000-8000-00000000b001'::uuid) $$,
  'another user: "mark all read" reaches only their own notification'
);

select throws_ok(
  $$ insert into public.notifications (user_id, type, title, message)
     values ('a11ce000-0000-4000-8000-000000000000', 'training_failed', 'Phishing', 'Log in here') $$,
  '42501', 'permission denied for table notifications',
  'another user: cannot send alice a notification'
);

select throws_ok(
  $$ delete from public.notifications where id = '9071f000-0000-4000-8000-00000000a002' $$,
  '42501', 'permission denied for table notifications',
  'another user: cannot delete alice''s notification'
);

reset role;

select results_eq(
  $$ select read from public.notifications where id = '9071f000-0000-4000-8000-00000000a002' $$,
  $$ values (false) $$,
  'another user: alice''s notification is still unread'
);

-- === Anonymous ===================================================================================
select tests.act_as_anon();

select throws_ok(
  $$ select * from public.notifications $$,
  '42501', 'permission denied for table notifications',
  'anon: cannot read notifications'
);

select throws_ok(
  $$ insert into public.notifications (user_id, type, title, message)
     values ('a11ce000-0000-4000-8000-000000000000', 'training_failed', 'Phishing', 'Log in here') $$,
  '42501', 'permission denied for table notifications',
  'anon: cannot create a notification'
);

select throws_ok(
  $$ update public.notifications set read = true $$,
  '42501', 'permission denied for table notifications',
  'anon: cannot mark notifications read'
);

select throws_ok(
  $$ delete from public.notifications $$,
  '42501', 'permission denied for table notifications',
  'anon: cannot delete notifications'
);

-- === Service role ================================================================================
reset role;
select tests.act_as_service_role();

select set_eq(
  $$ select id from public.notifications
     where user_id in ('a11ce000-0000-4000-8000-000000000000', 'b0b00000-0000-4000-8000-000000000000') $$,
  $$ values ('9071f000-0000-4000-8000-00000000a001'::uuid), ('9071f000-0000-4000-8000-00000000a002'),
            ('9071f000-0000-4000-8000-00000000b001') $$,
  'service role: sees every user''s notifications'
);

select lives_ok(
  $$ insert into public.notifications (id, user_id, type, title, message, dedupe_key)
     values ('9071f000-0000-4000-8000-00000000b002', 'b0b00000-0000-4000-8000-000000000000',
             'training_stalled', 'Training stalled', 'No progress for 10 minutes.', 'pgtap:b:stalled') $$,
  'service role: creates a notification'
);

-- Each lifecycle event is notified once.
select results_eq(
  $$ with i as (insert into public.notifications (user_id, type, title, message, dedupe_key)
                values ('b0b00000-0000-4000-8000-000000000000', 'training_stalled',
                        'Training stalled', 'No progress for 10 minutes.', 'pgtap:b:stalled')
                on conflict (dedupe_key) do nothing returning 1)
     select count(*)::int from i $$,
  $$ values (0) $$,
  'service role: a second notification with the same dedupe key is not stored'
);

select results_eq(
  $$ with u as (update public.notifications set priority = 'high'
                where id = '9071f000-0000-4000-8000-00000000b002' returning 1)
     select count(*)::int from u $$,
  $$ values (1) $$,
  'service role: updates a notification'
);

select results_eq(
  $$ select priority from public.notifications where id = '9071f000-0000-4000-8000-00000000b002' $$,
  $$ values ('high') $$,
  'service role: the update is stored'
);

select results_eq(
  $$ with d as (delete from public.notifications where id = '9071f000-0000-4000-8000-00000000b002' returning 1)
     select count(*)::int from d $$,
  $$ values (1) $$,
  'service role: deletes a notification'
);

select is_empty(
  $$ select from public.notifications where id = '9071f000-0000-4000-8000-00000000b002' $$,
  'service role: the deleted notification is gone'
);

select * from finish();
rollback;
