-- Version 5: users.plan, the plan ([plans.NAME]) of the user's latest call, written by the
-- batch writer; the admin API shows it and filters the users list by it. NULL: no plan, or no
-- call since the gateway had plans.
ALTER TABLE users ADD COLUMN plan TEXT;
CREATE INDEX users_plan ON users (plan);
