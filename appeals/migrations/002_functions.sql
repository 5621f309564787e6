-- 002: the functions missedcalld calls (one round trip per batch of
-- outcomes, one per widget query). See appeals/SCHEMA.md.

-- Microseconds since the epoch -> timestamptz; 0 / NULL -> NULL.
-- PL/pgSQL on purpose (here and below): a SQL function that cannot be
-- inlined is planned again on every call inside a subtransaction.
CREATE OR REPLACE FUNCTION mcd_ts(us bigint) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF us IS NULL OR us = 0 THEN
		RETURN NULL;
	END IF;
	RETURN 'epoch'::timestamptz + us * interval '1 microsecond';
END
$$;

-- Zero-pads a sequence value to width digits, never truncating.
CREATE OR REPLACE FUNCTION mcd_pad(v bigint, width integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF length(v::text) >= width THEN
		RETURN v::text;
	END IF;
	RETURN lpad(v::text, width, '0');
END
$$;

-- The appeal as JSON: the object of the outbox payload and of the
-- appeals list (SCHEMA.md "Appeal object"). PL/pgSQL, not SQL: its plan is
-- cached for the session, where a SQL function called from PL/pgSQL is
-- planned again in every subtransaction (1-2 ms each).
CREATE OR REPLACE FUNCTION mcd_appeal_json(p_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
	RETURN (SELECT jsonb_build_object(
		'id', a.id,
		'number', a.number,
		'title', a.title,
		'type', t.name,
		'status', s.name,
		'closed', s.is_closed,
		'manager', CASE WHEN e.id IS NULL THEN NULL ELSE
			jsonb_build_object('id', e.id, 'login', e.login, 'name', e.name) END,
		'deadline', a.deadline,
		'urgent', a.urgent,
		'client', CASE WHEN a.client_id IS NULL THEN NULL ELSE
			jsonb_build_object('id', a.client_id, 'name', a.client_name) END,
		'client_name', a.client_name,
		'phone', a.phone,
		'phone_withheld', a.phone_withheld,
		'comment', a.comment,
		'source', a.source,
		'ad_campaign', a.ad_campaign,
		'location', a.location,
		'tags', COALESCE((SELECT jsonb_agg(g.tag ORDER BY g.tag)
			FROM appeal_tags g WHERE g.appeal_id = a.id), '[]'::jsonb),
		'specialists', COALESCE((SELECT jsonb_agg(se.login ORDER BY se.login)
			FROM appeal_specialists sp JOIN employees se ON se.id = sp.employee_id
			WHERE sp.appeal_id = a.id), '[]'::jsonb),
		'calls_count', a.calls_count,
		'after_hours', a.after_hours,
		'overdue', a.overdue_at IS NOT NULL
			OR (a.deadline IS NOT NULL AND a.deadline < now() AND NOT s.is_closed),
		'created_at', a.created_at,
		'updated_at', a.updated_at,
		'last_call_at', a.last_call_at)
	FROM appeals a
	JOIN appeal_types t ON t.id = a.type_id
	JOIN appeal_statuses s ON s.id = a.status_id
	LEFT JOIN employees e ON e.id = a.manager_id
	WHERE a.id = p_id);
END
$$;

-- One missed call (a document built by store.c, SCHEMA.md "Outcome
-- document"): attach to an open appeal of the same phone within the
-- dedupe window, or create an appeal; write the call row and the outbox
-- event. Idempotent on (pbx, call_key): status 'duplicate', nothing written.
CREATE OR REPLACE FUNCTION mcd_submit_one(o jsonb,
	OUT status text, OUT appeal_id bigint, OUT appeal_number text,
	OUT event_id bigint, OUT event_kind text, OUT event_payload jsonb,
	OUT event_created_at timestamptz, OUT message text)
LANGUAGE plpgsql AS $$
DECLARE
	v_phone text := NULLIF(o->>'phone', '');
	v_when timestamptz := COALESCE(mcd_ts((o->>'when_us')::bigint), now());
	v_ended timestamptz := COALESCE(mcd_ts((o->>'ended_us')::bigint), v_when);
	v_dedupe integer := COALESCE((o->>'dedupe_window_min')::integer, 0);
	v_repeat_n integer := COALESCE((o->>'repeat_count')::integer, 0);
	v_repeat_win integer := COALESCE((o->>'repeat_window_min')::integer, 0);
	v_vip_tag text := NULLIF(o->>'vip_tag', '');
	v_ids bigint[];
	v_names text[];
	v_client_id bigint;
	v_client_name text;
	v_candidates jsonb := '[]'::jsonb;
	v_target bigint;
	v_id bigint;
	v_call_id bigint;
	v_urgent boolean := false;
	v_count integer;
	v_type_id bigint;
	v_status_id bigint;
	v_manager_id bigint;
	v_period text;
	v_seq bigint;
	v_title text;
	v_comment text;
	v_missing text;
	v_call jsonb;
BEGIN
	message := NULL;
	-- Client match: every client with a phone normalising to the caller's.
	IF v_phone IS NOT NULL THEN
		SELECT array_agg(c.id ORDER BY c.id), array_agg(c.name ORDER BY c.id)
		INTO v_ids, v_names
		FROM clients c
		WHERE c.id IN (SELECT cp.client_id FROM client_phones cp
			       WHERE cp.phone_e164 = v_phone);
	END IF;
	IF COALESCE(array_length(v_ids, 1), 0) = 1 THEN
		v_client_id := v_ids[1];
		v_client_name := v_names[1];
	ELSIF COALESCE(array_length(v_ids, 1), 0) > 1 THEN
		SELECT jsonb_agg(jsonb_build_object('id', v_ids[k], 'name', v_names[k]) ORDER BY k)
		INTO v_candidates
		FROM generate_subscripts(v_ids, 1) AS k;
	END IF;

	-- Dedupe: the newest open missed-call appeal of this phone whose last
	-- call is within the window. Never for a withheld number.
	IF v_phone IS NOT NULL AND v_dedupe > 0 THEN
		SELECT a.id INTO v_target
		FROM appeals a JOIN appeal_statuses s ON s.id = a.status_id
		WHERE a.origin = 'missed_call' AND a.phone = v_phone AND NOT s.is_closed
		  AND a.last_call_at >= v_when - make_interval(mins => v_dedupe)
		ORDER BY a.last_call_at DESC, a.id DESC
		LIMIT 1
		FOR UPDATE OF a;
	END IF;

	-- A new appeal needs its type: refuse before writing anything (the
	-- batch must not fail for one outcome; see mcd_submit_outcomes).
	IF v_target IS NULL THEN
		SELECT t.id, t.initial_status_id INTO v_type_id, v_status_id
		FROM appeal_types t WHERE t.name = o->>'type';
		IF v_type_id IS NULL AND NOT EXISTS (SELECT 1 FROM appeal_calls c
				WHERE c.pbx = o->>'pbx' AND c.call_key = o->>'call_key') THEN
			status := 'error';
			message := format('appeal type "%s" does not exist', o->>'type');
			RETURN;
		END IF;
	END IF;

	-- Claim the call first: a duplicate stops here, before any counter
	-- moves (the foreign key to appeals is checked at commit).
	v_id := COALESCE(v_target, nextval(pg_get_serial_sequence('appeals', 'id')));
	INSERT INTO appeal_calls AS ac (appeal_id, pbx, call_key, caller, phone,
		caller_name, did, queue, extensions, reason, ring_seconds,
		wait_seconds, voicemail_left, gap, started_at, ended_at)
	VALUES (v_id, o->>'pbx', o->>'call_key', NULLIF(o->>'caller', ''), v_phone,
		NULLIF(o->>'caller_name', ''), NULLIF(o->>'did', ''),
		NULLIF(o->>'queue', ''),
		COALESCE((SELECT array_agg(x) FROM jsonb_array_elements_text(o->'extensions') x), '{}'),
		COALESCE(o->>'reason', 'unknown'),
		COALESCE((o->>'ring_seconds')::double precision, 0),
		COALESCE((o->>'wait_seconds')::double precision, 0),
		COALESCE((o->>'voicemail_left')::boolean, false),
		COALESCE((o->>'gap')::boolean, false),
		mcd_ts((o->>'started_us')::bigint), v_ended)
	ON CONFLICT (pbx, call_key) DO NOTHING
	RETURNING ac.id INTO v_call_id;
	IF v_call_id IS NULL THEN
		SELECT c.appeal_id, a.number INTO appeal_id, appeal_number
		FROM appeal_calls c LEFT JOIN appeals a ON a.id = c.appeal_id
		WHERE c.pbx = o->>'pbx' AND c.call_key = o->>'call_key';
		status := 'duplicate';
		RETURN;
	END IF;

	-- Urgent: a matched client carries the VIP tag, or the number's
	-- missed calls within the window (this one included) reach the count.
	IF v_vip_tag IS NOT NULL AND v_ids IS NOT NULL THEN
		v_urgent := EXISTS (SELECT 1 FROM client_tags t
				    WHERE t.client_id = ANY (v_ids) AND t.tag = v_vip_tag);
	END IF;
	IF NOT v_urgent AND v_phone IS NOT NULL AND v_repeat_n > 0 AND v_repeat_win > 0 THEN
		SELECT count(*) INTO v_count FROM appeal_calls c
		WHERE c.phone = v_phone
		  AND c.ended_at > v_ended - make_interval(mins => v_repeat_win)
		  AND c.ended_at <= v_ended;
		v_urgent := v_count >= v_repeat_n;
	END IF;

	v_call := jsonb_build_object(
		'pbx', o->>'pbx', 'call_key', o->>'call_key',
		'caller', NULLIF(o->>'caller', ''), 'phone', v_phone,
		'did', NULLIF(o->>'did', ''), 'queue', NULLIF(o->>'queue', ''),
		'reason', COALESCE(o->>'reason', 'unknown'),
		'ring_seconds', COALESCE((o->>'ring_seconds')::double precision, 0),
		'wait_seconds', COALESCE((o->>'wait_seconds')::double precision, 0),
		'started_at', mcd_ts((o->>'started_us')::bigint),
		'ended_at', v_ended);

	IF v_target IS NOT NULL THEN
		UPDATE appeals a SET calls_count = a.calls_count + 1,
			updated_at = now(),
			last_call_at = GREATEST(a.last_call_at, v_ended),
			urgent = a.urgent OR v_urgent,
			client_id = COALESCE(a.client_id, v_client_id),
			client_name = COALESCE(a.client_name, v_client_name)
		WHERE a.id = v_target;
		status := 'updated';
		event_kind := 'appeal.updated';
	ELSE
		IF NULLIF(o->>'manager', '') IS NOT NULL THEN
			SELECT e.id INTO v_manager_id FROM employees e WHERE e.login = o->>'manager';
			IF v_manager_id IS NULL THEN
				message := format('manager "%s" does not exist: appeal created without one',
						  o->>'manager');
			END IF;
		END IF;

		-- Gap-free number: the period's counter row, locked until commit.
		v_period := COALESCE(o->>'number_prefix', '') || '{seq}' ||
			    COALESCE(o->>'number_suffix', '');
		LOOP
			INSERT INTO appeal_number_counters AS n (period, last_value)
			VALUES (v_period, 1)
			ON CONFLICT (period) DO UPDATE SET last_value = n.last_value + 1
			RETURNING n.last_value INTO v_seq;
			appeal_number := COALESCE(o->>'number_prefix', '') ||
				mcd_pad(v_seq, COALESCE((o->>'number_width')::integer, 0)) ||
				COALESCE(o->>'number_suffix', '');
			-- A number the CRM typed by hand is skipped, not reused.
			EXIT WHEN NOT EXISTS (SELECT 1 FROM appeals a WHERE a.number = appeal_number);
		END LOOP;

		IF v_client_id IS NOT NULL THEN
			v_title := replace(COALESCE(o->>'title_known', ''), chr(57344), v_client_name);
		ELSE
			v_title := COALESCE(o->>'title_unknown', '');
		END IF;
		v_comment := COALESCE(o->>'comment', '');
		IF jsonb_array_length(v_candidates) > 0 THEN
			v_comment := v_comment || CASE WHEN v_comment = '' THEN '' ELSE E'\n' END ||
				'Клиенты с этим номером / clients with this number: ' ||
				(SELECT string_agg(format('%s (#%s)', c->>'name', c->>'id'), ', ')
				 FROM jsonb_array_elements(v_candidates) c);
		END IF;

		INSERT INTO appeals (id, number, title, type_id, status_id, client_id,
			client_name, phone, comment, source, ad_campaign, location,
			manager_id, urgent, deadline, origin, calls_count, last_call_at,
			after_hours, phone_withheld)
		VALUES (v_id, appeal_number, v_title, v_type_id, v_status_id, v_client_id,
			v_client_name, v_phone, v_comment, NULLIF(o->>'source', ''),
			NULLIF(o->>'ad_campaign', ''), NULLIF(o->>'location', ''),
			v_manager_id, v_urgent, mcd_ts((o->>'deadline_us')::bigint),
			'missed_call', 1, v_ended,
			COALESCE((o->>'after_hours')::boolean, false),
			COALESCE((o->>'withheld')::boolean, false));
		INSERT INTO appeal_tags (appeal_id, tag)
		SELECT v_id, x FROM jsonb_array_elements_text(COALESCE(o->'tags', '[]')) x
		WHERE x <> ''
		ON CONFLICT DO NOTHING;
		INSERT INTO appeal_specialists (appeal_id, employee_id)
		SELECT v_id, e.id FROM employees e
		WHERE e.login IN (SELECT jsonb_array_elements_text(COALESCE(o->'specialists', '[]')))
		ON CONFLICT DO NOTHING;
		SELECT string_agg(x, ', ') INTO v_missing
		FROM jsonb_array_elements_text(COALESCE(o->'specialists', '[]')) x
		WHERE NOT EXISTS (SELECT 1 FROM employees e WHERE e.login = x);
		IF v_missing IS NOT NULL THEN
			message := concat_ws('; ', message,
				format('specialists not found: %s', v_missing));
		END IF;
		status := 'created';
		event_kind := 'appeal.created';
	END IF;

	appeal_id := v_id;
	SELECT a.number INTO appeal_number FROM appeals a WHERE a.id = v_id;
	event_payload := jsonb_build_object(
		'change', CASE WHEN status = 'created' THEN 'created' ELSE 'call_attached' END,
		'appeal', mcd_appeal_json(v_id),
		'call', v_call,
		'candidates', v_candidates);
	INSERT INTO appeal_events (kind, appeal_id, payload)
	VALUES (event_kind, v_id, event_payload)
	RETURNING appeal_events.id, appeal_events.created_at INTO event_id, event_created_at;
END
$$;

-- A batch of outcome documents (a JSON array) in one transaction. No
-- subtransaction per document: hundreds of subtransactions with writes
-- overflow the backend's subxid cache and make every visibility check
-- slow (5x here). An outcome the data refuses is reported as status
-- 'error' without raising (unknown type); anything else that raises fails
-- the batch, and the daemon then retries its outcomes one per batch, so
-- one bad outcome is isolated and kept aside. The advisory lock
-- serialises writers across daemons, so outbox ids follow commit order
-- and two daemons never both create an appeal for one number.
CREATE OR REPLACE FUNCTION mcd_submit_outcomes(p_batch jsonb)
RETURNS TABLE (idx integer, status text, appeal_id bigint, appeal_number text,
	event_id bigint, event_kind text, event_payload jsonb,
	event_created_at timestamptz, message text)
LANGUAGE plpgsql AS $$
DECLARE
	v_doc jsonb;
	v_i bigint;
	r record;
BEGIN
	PERFORM pg_advisory_xact_lock(4242, 1);
	FOR v_doc, v_i IN SELECT e, n FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS x(e, n) LOOP
		r := mcd_submit_one(v_doc);
		idx := v_i;
		status := r.status;
		appeal_id := r.appeal_id;
		appeal_number := r.appeal_number;
		event_id := r.event_id;
		event_kind := r.event_kind;
		event_payload := r.event_payload;
		event_created_at := r.event_created_at;
		message := r.message;
		RETURN NEXT;
	END LOOP;
END
$$;

-- Marks appeals whose deadline passed while open, once each, and writes
-- one appeal.overdue event per appeal. Bounded per call.
CREATE OR REPLACE FUNCTION mcd_mark_overdue(p_limit integer)
RETURNS TABLE (event_id bigint, event_kind text, appeal_id bigint,
	event_payload jsonb, event_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	PERFORM pg_advisory_xact_lock(4242, 1);
	FOR r IN
		UPDATE appeals a SET overdue_at = now()
		WHERE a.id IN (
			SELECT a2.id FROM appeals a2
			JOIN appeal_statuses s ON s.id = a2.status_id
			WHERE a2.overdue_at IS NULL AND a2.deadline IS NOT NULL
			  AND a2.deadline < now() AND NOT s.is_closed
			ORDER BY a2.deadline
			LIMIT p_limit
			FOR UPDATE OF a2 SKIP LOCKED)
		RETURNING a.id, a.deadline
	LOOP
		appeal_id := r.id;
		event_kind := 'appeal.overdue';
		event_payload := jsonb_build_object(
			'change', 'overdue',
			'appeal', mcd_appeal_json(r.id),
			'overdue_seconds', floor(extract(epoch FROM now() - r.deadline)));
		INSERT INTO appeal_events (kind, appeal_id, payload)
		VALUES (event_kind, r.id, event_payload)
		RETURNING appeal_events.id, appeal_events.created_at
		INTO event_id, event_created_at;
		RETURN NEXT;
	END LOOP;
END
$$;

-- The ringing card: every client with a phone normalising to p_phone.
CREATE OR REPLACE FUNCTION mcd_client_card(p_phone text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
	SELECT COALESCE(jsonb_agg(q.card ORDER BY q.id), '[]'::jsonb)
	FROM (
		SELECT c.id, jsonb_build_object(
			'id', c.id,
			'name', c.name,
			'tags', COALESCE((SELECT jsonb_agg(t.tag ORDER BY t.tag)
				FROM client_tags t WHERE t.client_id = c.id), '[]'::jsonb),
			'open_appeals', COALESCE((
				SELECT jsonb_agg(x.j ORDER BY x.created_at DESC, x.id DESC)
				FROM (SELECT a.id, a.created_at, jsonb_build_object(
						'id', a.id, 'number', a.number, 'title', a.title,
						'status', s.name, 'deadline', a.deadline,
						'urgent', a.urgent,
						'overdue', a.deadline IS NOT NULL AND a.deadline < now()) AS j
				      FROM appeals a JOIN appeal_statuses s ON s.id = a.status_id
				      WHERE a.client_id = c.id AND NOT s.is_closed
				      ORDER BY a.created_at DESC, a.id DESC
				      LIMIT 10) x), '[]'::jsonb)) AS card
		FROM clients c
		WHERE c.id IN (SELECT cp.client_id FROM client_phones cp
			       WHERE cp.phone_e164 = p_phone)
		ORDER BY c.id
		LIMIT 10) q
$$;

-- GET /v1/appeals.
CREATE OR REPLACE FUNCTION mcd_appeals_list(p_open_only boolean,
	p_since timestamptz, p_manager text, p_limit integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
	SELECT COALESCE(jsonb_agg(mcd_appeal_json(q.id) ORDER BY q.created_at DESC, q.id DESC),
			'[]'::jsonb)
	FROM (
		SELECT a.id, a.created_at FROM appeals a
		JOIN appeal_statuses s ON s.id = a.status_id
		LEFT JOIN employees e ON e.id = a.manager_id
		WHERE (NOT p_open_only OR NOT s.is_closed)
		  AND (p_since IS NULL OR a.created_at >= p_since)
		  AND (p_manager IS NULL OR e.login = p_manager)
		ORDER BY a.created_at DESC, a.id DESC
		LIMIT p_limit) q
$$;

-- The names a configuration refers to that the database lacks.
CREATE OR REPLACE FUNCTION mcd_missing_names(p_types jsonb, p_logins jsonb,
	OUT missing_types text[], OUT missing_logins text[])
LANGUAGE sql STABLE AS $$
	SELECT
		COALESCE((SELECT array_agg(x ORDER BY x) FROM jsonb_array_elements_text(p_types) x
			  WHERE NOT EXISTS (SELECT 1 FROM appeal_types t WHERE t.name = x)), '{}'),
		COALESCE((SELECT array_agg(x ORDER BY x) FROM jsonb_array_elements_text(p_logins) x
			  WHERE NOT EXISTS (SELECT 1 FROM employees e WHERE e.login = x)), '{}')
$$;
