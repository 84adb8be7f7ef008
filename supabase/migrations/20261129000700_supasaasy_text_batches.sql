-- write_batch with its body as text. PostgREST passes a text/plain body to a function's
-- single unnamed text parameter as it is, while a JSON body is first parsed by PostgREST
-- itself: for 1,000-row batches that parse cost about as much CPU as the database's
-- write. The body and the result are those of write_batch(jsonb).
create function supasaasy.write_batch(text)
returns jsonb
language sql as $$
    select supasaasy.write_batch($1::jsonb)
$$;

revoke execute on function supasaasy.write_batch(text) from public, anon, authenticated;
grant execute on function supasaasy.write_batch(text) to service_role;
