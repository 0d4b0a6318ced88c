-- The writer retries a batch it could not confirm; when the database had
-- committed it and only the acknowledgement was lost (a connection cut at
-- the wrong instant), the retry wrote every event twice. Event ids are
-- unique from here on and the writer's inserts skip ids already stored.
DELETE FROM job_events WHERE id NOT IN (SELECT MIN(id) FROM job_events GROUP BY event_id);
CREATE UNIQUE INDEX job_events_event_id ON job_events (event_id);
DELETE FROM worker_events WHERE id NOT IN (SELECT MIN(id) FROM worker_events GROUP BY event_id);
CREATE UNIQUE INDEX worker_events_event_id ON worker_events (event_id);
