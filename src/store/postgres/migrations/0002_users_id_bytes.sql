-- Version 2: the users list sorted by id compares ids as bytes (`id COLLATE "C"`, SQLite's
-- order, src/store/postgres/reads/users.rs); under any other database collation the primary key
-- cannot serve that order, so every page sorted all matching users. This index can.
CREATE INDEX users_id_bytes ON users (id COLLATE "C");
