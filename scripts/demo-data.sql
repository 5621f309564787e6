-- demo-data.sql: a small CRM for scripts/demo, loaded after `missedcalld --migrate`.
--
-- Appeal statuses with their transitions, appeal types (names match
-- conf/demo.conf), employees with logins, and 300 clients whose phones are
-- written the way people type them ("8 (916) 123-45-67", "+7 916 123 45 67",
-- "9161234567", "8-916-123-45-67", ...). Some clients are tagged VIP; a few
-- have an office line as a second phone; two share one number (a family),
-- so a call from it names both as candidates instead of guessing.
-- Deterministic: the same data every run. Idempotent: safe to load twice.

BEGIN;

INSERT INTO appeal_statuses (name, is_closed, is_successful, sort_order) VALUES
	('Новое', false, false, 10),
	('В работе', false, false, 20),
	('Перезвонить позже', false, false, 30),
	('Перезвонили', true, true, 40),
	('Не дозвонились', true, false, 50),
	('Спам', true, false, 60)
ON CONFLICT (name) DO NOTHING;

INSERT INTO appeal_status_transitions (from_status_id, to_status_id)
SELECT f.id, t.id
FROM (VALUES
	('Новое', 'В работе'), ('Новое', 'Перезвонили'), ('Новое', 'Спам'),
	('В работе', 'Перезвонить позже'), ('В работе', 'Перезвонили'),
	('В работе', 'Не дозвонились'), ('Перезвонить позже', 'В работе'),
	('Перезвонить позже', 'Не дозвонились'), ('Не дозвонились', 'В работе')
) AS tr (from_name, to_name)
JOIN appeal_statuses f ON f.name = tr.from_name
JOIN appeal_statuses t ON t.name = tr.to_name
ON CONFLICT DO NOTHING;

INSERT INTO appeal_types (name, initial_status_id)
SELECT n, (SELECT id FROM appeal_statuses WHERE name = 'Новое')
FROM unnest(ARRAY['Пропущенный звонок', 'Звонок в отдел продаж',
		  'Звонок в нерабочее время', 'Заявка с сайта']) AS n
ON CONFLICT (name) DO NOTHING;

INSERT INTO employees (login, name) VALUES
	('ivanova', 'Мария Иванова'),
	('petrov', 'Павел Петров'),
	('duty', 'Дежурный менеджер'),
	('operator', 'Оператор колл-центра'),
	('sidorova', 'Анна Сидорова')
ON CONFLICT (login) DO NOTHING;

-- 300 clients, once.
DO $$
DECLARE
	first_m text[] := ARRAY['Иван', 'Сергей', 'Дмитрий', 'Алексей', 'Павел',
		'Андрей', 'Николай', 'Михаил', 'Олег', 'Артём'];
	first_f text[] := ARRAY['Ольга', 'Елена', 'Анна', 'Мария', 'Наталья',
		'Татьяна', 'Ирина', 'Светлана', 'Юлия', 'Ксения'];
	last_m text[] := ARRAY['Иванов', 'Смирнов', 'Кузнецов', 'Попов', 'Васильев',
		'Петров', 'Соколов', 'Михайлов', 'Новиков', 'Фёдоров', 'Морозов',
		'Волков', 'Алексеев', 'Лебедев', 'Семёнов'];
	companies text[] := ARRAY['ООО «Ромашка»', 'ИП Гусев', 'АО «Техстрой»',
		'ООО «Вектор»', 'Кафе «Уют»', 'ООО «Северный ветер»'];
	d text;
	phone text;
	cname text;
	cid bigint;
	i int;
BEGIN
	IF (SELECT count(*) FROM clients) >= 300 THEN
		RETURN;
	END IF;
	FOR i IN 1..300 LOOP
		-- A distinct mobile number 9XXXXXXXXX per client.
		d := '9' || lpad(((i::bigint * 7919 * 104729 + 12345678) % 1000000000)::text, 9, '0');
		phone := CASE i % 8
			WHEN 0 THEN '8 (' || substr(d, 1, 3) || ') ' || substr(d, 4, 3) || '-' ||
				    substr(d, 7, 2) || '-' || substr(d, 9, 2)
			WHEN 1 THEN '+7 ' || substr(d, 1, 3) || ' ' || substr(d, 4, 3) || ' ' ||
				    substr(d, 7, 2) || ' ' || substr(d, 9, 2)
			WHEN 2 THEN d
			WHEN 3 THEN '+7' || d
			WHEN 4 THEN '8-' || substr(d, 1, 3) || '-' || substr(d, 4, 3) || '-' ||
				    substr(d, 7, 2) || '-' || substr(d, 9, 2)
			WHEN 5 THEN '7 (' || substr(d, 1, 3) || ') ' || substr(d, 4, 7)
			WHEN 6 THEN '8' || d
			ELSE '+7(' || substr(d, 1, 3) || ')' || substr(d, 4, 3) || '-' ||
			     substr(d, 7, 4)
		END;
		IF i % 17 = 0 THEN
			cname := companies[1 + (i / 17) % array_length(companies, 1)];
		ELSIF i % 2 = 0 THEN
			cname := first_f[1 + i % 10] || ' ' || last_m[1 + (i * 7) % 15] || 'а';
		ELSE
			cname := first_m[1 + i % 10] || ' ' || last_m[1 + (i * 7) % 15];
		END IF;
		INSERT INTO clients (name) VALUES (cname) RETURNING id INTO cid;
		INSERT INTO client_phones (client_id, phone) VALUES (cid, phone);
		-- Every 10th client also has an office line.
		IF i % 10 = 0 THEN
			INSERT INTO client_phones (client_id, phone)
			VALUES (cid, '+7 (495) ' || lpad((1000000 + i * 3571 % 8999999)::text, 7, '0'));
		END IF;
		-- Every 12th client is a VIP (missed_calls.urgent.vip_tag).
		IF i % 12 = 0 THEN
			INSERT INTO client_tags (client_id, tag) VALUES (cid, 'VIP');
		END IF;
		IF i % 9 = 0 THEN
			INSERT INTO client_tags (client_id, tag) VALUES (cid, 'опт');
		END IF;
	END LOOP;
	-- A family sharing the number of client #1: calls from it list both.
	INSERT INTO clients (name) VALUES ('Ирина Смирнова (жена)') RETURNING id INTO cid;
	INSERT INTO client_phones (client_id, phone)
	SELECT cid, cp.phone FROM client_phones cp
	WHERE cp.client_id = (SELECT min(id) FROM clients);
END $$;

COMMIT;
