-- 001: the appeals schema (public contract: appeals/SCHEMA.md).
--
-- CRM-owned tables (clients, client_phones, employees, appeal_statuses,
-- appeal_status_transitions, appeal_types) may already exist in a CRM's
-- database; every column beyond the contract has a default so the CRM can
-- insert rows knowing only the contract columns.

CREATE TABLE IF NOT EXISTS clients (
	id bigserial PRIMARY KEY,
	name text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS client_phones (
	id bigserial PRIMARY KEY,
	client_id bigint NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
	phone text NOT NULL,
	-- Kept by the trigger client_phones_normalize (migration 003) from
	-- phone: E.164, or NULL when phone is not a phone number.
	phone_e164 text DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS client_phones_client_id_idx ON client_phones (client_id);
CREATE INDEX IF NOT EXISTS client_phones_e164_idx ON client_phones (phone_e164);

-- Client tags (urgent rule: missed_calls.urgent.vip_tag).
CREATE TABLE IF NOT EXISTS client_tags (
	client_id bigint NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
	tag text NOT NULL,
	PRIMARY KEY (client_id, tag)
);

CREATE TABLE IF NOT EXISTS employees (
	id bigserial PRIMARY KEY,
	login text NOT NULL UNIQUE,
	name text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS appeal_statuses (
	id bigserial PRIMARY KEY,
	name text NOT NULL UNIQUE,
	is_closed boolean NOT NULL DEFAULT false,
	is_successful boolean NOT NULL DEFAULT false,
	sort_order integer NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS appeal_status_transitions (
	from_status_id bigint NOT NULL REFERENCES appeal_statuses (id) ON DELETE CASCADE,
	to_status_id bigint NOT NULL REFERENCES appeal_statuses (id) ON DELETE CASCADE,
	PRIMARY KEY (from_status_id, to_status_id)
);

CREATE TABLE IF NOT EXISTS appeal_types (
	id bigserial PRIMARY KEY,
	name text NOT NULL UNIQUE,
	initial_status_id bigint NOT NULL REFERENCES appeal_statuses (id)
);

CREATE TABLE appeals (
	id bigserial PRIMARY KEY,
	number text NOT NULL UNIQUE,
	title text NOT NULL,
	type_id bigint NOT NULL REFERENCES appeal_types (id),
	status_id bigint NOT NULL REFERENCES appeal_statuses (id),
	client_id bigint REFERENCES clients (id) ON DELETE SET NULL,
	client_name text,
	phone text,			-- E.164; NULL: number withheld
	comment text NOT NULL DEFAULT '',
	source text,
	ad_campaign text,
	location text,
	manager_id bigint REFERENCES employees (id) ON DELETE SET NULL,
	urgent boolean NOT NULL DEFAULT false,
	deadline timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	-- 'missed_call' for appeals missedcalld created; the CRM's own
	-- appeals keep the default and are never deduplicated into.
	origin text NOT NULL DEFAULT 'manual',
	calls_count integer NOT NULL DEFAULT 0,
	last_call_at timestamptz,	-- end of the latest attached missed call
	after_hours boolean NOT NULL DEFAULT false,
	phone_withheld boolean NOT NULL DEFAULT false,
	-- Set once, by the overdue sweep, when the deadline passed while the
	-- status was open (one appeal.overdue event per appeal).
	overdue_at timestamptz
);
-- Dedupe: the newest open missed-call appeal of a phone.
CREATE INDEX appeals_missed_phone_idx ON appeals (phone, last_call_at DESC)
	WHERE origin = 'missed_call';
-- Overdue sweep: appeals with a deadline not yet marked.
CREATE INDEX appeals_due_idx ON appeals (deadline)
	WHERE overdue_at IS NULL AND deadline IS NOT NULL;
CREATE INDEX appeals_created_at_idx ON appeals (created_at);
CREATE INDEX appeals_client_id_idx ON appeals (client_id);
CREATE INDEX appeals_manager_id_idx ON appeals (manager_id);

CREATE TABLE appeal_tags (
	appeal_id bigint NOT NULL REFERENCES appeals (id) ON DELETE CASCADE,
	tag text NOT NULL,
	PRIMARY KEY (appeal_id, tag)
);

CREATE TABLE appeal_specialists (
	appeal_id bigint NOT NULL REFERENCES appeals (id) ON DELETE CASCADE,
	employee_id bigint NOT NULL REFERENCES employees (id) ON DELETE CASCADE,
	PRIMARY KEY (appeal_id, employee_id)
);

-- One row per missed call. unique (pbx, call_key) makes creation
-- idempotent; the row is inserted first (ON CONFLICT DO NOTHING), before
-- the appeal it points to, hence the deferred foreign key.
CREATE TABLE appeal_calls (
	id bigserial PRIMARY KEY,
	appeal_id bigint NOT NULL REFERENCES appeals (id) ON DELETE CASCADE
		DEFERRABLE INITIALLY DEFERRED,
	pbx text NOT NULL,
	call_key text NOT NULL,
	caller text,			-- as presented by the PBX; NULL: withheld
	phone text,			-- caller in E.164; NULL: withheld / not a number
	caller_name text,
	did text,
	queue text,
	extensions text[] NOT NULL DEFAULT '{}',
	reason text NOT NULL,
	ring_seconds double precision NOT NULL DEFAULT 0,
	wait_seconds double precision NOT NULL DEFAULT 0,
	voicemail_left boolean NOT NULL DEFAULT false,
	gap boolean NOT NULL DEFAULT false,
	started_at timestamptz,
	ended_at timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (pbx, call_key)
);
CREATE INDEX appeal_calls_appeal_id_idx ON appeal_calls (appeal_id);
CREATE INDEX appeal_calls_phone_idx ON appeal_calls (phone, ended_at);

-- Gap-free numbering: one row per rendered template period ("A-2026-{seq}").
-- The row is updated in the appeal's transaction, so a rolled-back appeal
-- gives its number back and concurrent writers queue on the row lock.
CREATE TABLE appeal_number_counters (
	period text PRIMARY KEY,
	last_value bigint NOT NULL DEFAULT 0
);

-- Outbox: written in the same transaction as the appeal change. Writers
-- serialise on an advisory lock, so ids are assigned in commit order and a
-- reader resuming "after id N" never skips a late commit.
CREATE TABLE appeal_events (
	id bigserial PRIMARY KEY,
	kind text NOT NULL,		-- appeal.created | appeal.updated | appeal.overdue
	appeal_id bigint,
	payload jsonb NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appeal_events_created_at_idx ON appeal_events (created_at);

-- Widget bearer tokens, stored as SHA-256 of the token.
CREATE TABLE widget_tokens (
	id bigserial PRIMARY KEY,
	employee_id bigint NOT NULL REFERENCES employees (id) ON DELETE CASCADE,
	token_hash bytea NOT NULL UNIQUE,
	created_at timestamptz NOT NULL DEFAULT now(),
	last_used_at timestamptz
);

-- Settings missedcalld keeps in the database (phone.default_country used
-- by the client_phones trigger).
CREATE TABLE mcd_settings (
	key text PRIMARY KEY,
	value text NOT NULL
);
