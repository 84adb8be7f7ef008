-- Cancelling and retrying jobs, and the request-rate check of the sync function.

-- A cancelled job's unfinished tasks are cancelled too.
alter table supasaasy.sync_job_tasks drop constraint sync_job_tasks_status_check;
alter table supasaasy.sync_job_tasks add constraint sync_job_tasks_status_check
    check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled'));

-- Cancels an active job: its pending and processing tasks become cancelled (a worker
-- running one is refused at its next page and stops). Returns the job, or no row when
-- it is unknown or no longer active.
create function supasaasy.cancel_job(p_job_id uuid)
returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_job supasaasy.sync_jobs;
begin
    update supasaasy.sync_jobs
       set status = 'cancelled', completed_at = now(),
           error_message = coalesce(error_message, 'cancelled')
     where id = p_job_id and status in ('pending', 'processing')
    returning * into v_job;
    if not found then
        return;
    end if;
    update supasaasy.sync_job_tasks
       set status = 'cancelled', completed_at = now()
     where job_id = p_job_id and status in ('pending', 'processing');
    return next v_job;
end;
$$;

-- Puts a failed or cancelled job's failed and cancelled tasks back to pending (each
-- resumes from its cursor) and makes the job active again. Raises unique_violation
-- while the app has another active job. Returns the job, or no row when it is unknown
-- or has nothing to retry.
create function supasaasy.retry_job(p_job_id uuid)
returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_job supasaasy.sync_jobs;
    v_failed integer;
    v_entities bigint;
begin
    select * into v_job from supasaasy.sync_jobs
     where id = p_job_id and status in ('failed', 'cancelled')
       for update;
    if not found then
        return;
    end if;
    -- Failed tasks were counted when they failed; they are counted again when they end.
    select count(*), coalesce(sum(entity_count), 0) into v_failed, v_entities
      from supasaasy.sync_job_tasks where job_id = p_job_id and status = 'failed';
    update supasaasy.sync_job_tasks
       set status = 'pending', error_message = null, completed_at = null
     where job_id = p_job_id and status in ('failed', 'cancelled');
    update supasaasy.sync_jobs
       set status = case when started_at is null then 'pending' else 'processing' end,
           failed_tasks = failed_tasks - v_failed,
           processed_entities = processed_entities - v_entities,
           completed_at = null,
           error_message = null
     where id = p_job_id
    returning * into v_job;
    return next v_job;
end;
$$;

-- Admits one request under a limit of p_per_minute per key (a shared sliding
-- allowance, same state as take_rate_allowance). Returns 0 when admitted, otherwise
-- the seconds after which a retry will be; a refused request uses no allowance.
create function supasaasy.admit_request(p_key text, p_per_minute integer)
returns double precision
language plpgsql as $$
declare
    v_now constant timestamptz := clock_timestamp();
    v_cost interval;
    v_tat timestamptz;
    v_burst interval := interval '1 minute';
begin
    if p_per_minute is null or p_per_minute < 1 then
        raise exception 'the limit must be at least one request a minute' using errcode = '22023';
    end if;
    v_cost := make_interval(secs => 60.0 / p_per_minute);
    insert into supasaasy.rate_limits as r (key, tat) values (p_key, v_now)
    on conflict (key) do nothing;
    select tat into v_tat from supasaasy.rate_limits where key = p_key for update;
    v_tat := greatest(v_tat, v_now) + v_cost;
    if v_tat - v_now > v_burst then
        return extract(epoch from (v_tat - v_now - v_burst));
    end if;
    update supasaasy.rate_limits set tat = v_tat where key = p_key;
    return 0;
end;
$$;

revoke execute on function
    supasaasy.cancel_job(uuid),
    supasaasy.retry_job(uuid),
    supasaasy.admit_request(text, integer)
    from public, anon, authenticated;
grant execute on function
    supasaasy.cancel_job(uuid),
    supasaasy.retry_job(uuid),
    supasaasy.admit_request(text, integer)
    to service_role;
