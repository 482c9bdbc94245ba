-- hookgate schema, version 14 (PostgreSQL): each route's queued jobs in claim order, (route, run_at, id), so a
-- claim reads every claimed route's due jobs in order from its own index range and stops at the claim's size.
-- The planner takes that path with or without table statistics. Through `jobs_queue` (run_at, id) filtered by
-- route it did not: on a table too new to have statistics it read and sorted every queued job of the routes for
-- each claim (17 ms a claim with 28,000 queued). It replaces `jobs_route_queue` (route, run_at), which the
-- queue-age gauge reads the same way.
CREATE INDEX jobs_route_queue_order ON jobs (route, run_at, id) WHERE status = 'queued';
DROP INDEX jobs_route_queue;
