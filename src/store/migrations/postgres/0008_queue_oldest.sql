-- hookgate schema, version 8 (PostgreSQL): each route's earliest queued job in one index seek, for
-- `hookgate_queue_oldest_seconds{route}` at every scrape, however long the backlog. Only queued jobs are in
-- it, so it stays the size of the queue; it costs every insert and status change one more index entry.
CREATE INDEX jobs_route_queue ON jobs (route, run_at) WHERE status = 'queued';
