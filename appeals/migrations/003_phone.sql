-- 003: phone normalisation in SQL, the same rules as telephony/phone.c
-- (tests/data/phones.tsv is the executable form of both; the integration
-- test tests/integration/store_phone.sh runs every row through this
-- function). client_phones.phone_e164 is kept by a trigger, so a lookup by
-- the caller's E.164 is one b-tree index probe whatever format the CRM
-- stored.

-- The country table of telephony/phone.c (phone_country_table()), in the
-- same order (the first of several countries sharing a code wins).
CREATE TABLE phone_countries (
	ord integer PRIMARY KEY,
	iso2 text NOT NULL UNIQUE,
	cc text NOT NULL,
	trunk text NOT NULL DEFAULT '',	  -- alternatives 'a|b'
	trunk_optional boolean NOT NULL DEFAULT false,
	nsn_min integer NOT NULL,
	nsn_max integer NOT NULL,
	intl text NOT NULL DEFAULT '',	  -- international prefixes besides 00
	nsn_first text NOT NULL DEFAULT '123456789'
);
INSERT INTO phone_countries (ord, iso2, cc, trunk, trunk_optional, nsn_min, nsn_max, intl, nsn_first) VALUES
	(1, 'RU', '7', '8', false, 10, 10, '810', '346789'),
	(2, 'KZ', '7', '8', false, 10, 10, '810', '346789'),
	(3, 'BY', '375', '80|8|0', false, 9, 9, '810', '123456789'),
	(4, 'UA', '380', '0', false, 9, 9, '', '123456789'),
	(5, 'US', '1', '1', true, 10, 10, '011', '23456789'),
	(6, 'CA', '1', '1', true, 10, 10, '011', '23456789'),
	(7, 'GB', '44', '0', false, 9, 10, '', '123456789'),
	(8, 'DE', '49', '0', false, 6, 11, '', '123456789'),
	(9, 'FR', '33', '0', false, 9, 9, '', '123456789'),
	(10, 'IT', '39', '', false, 6, 11, '', '0123456789'),
	(11, 'ES', '34', '', false, 9, 9, '', '123456789'),
	(12, 'PL', '48', '', false, 9, 9, '', '123456789'),
	(13, 'NL', '31', '0', false, 9, 9, '', '123456789'),
	(14, 'AT', '43', '0', false, 4, 13, '', '123456789'),
	(15, 'CH', '41', '0', false, 9, 9, '', '123456789'),
	(16, 'CZ', '420', '', false, 9, 9, '', '123456789'),
	(17, 'FI', '358', '0', false, 5, 12, '', '123456789'),
	(18, 'LV', '371', '', false, 8, 8, '', '123456789'),
	(19, 'LT', '370', '8|0', false, 8, 8, '', '123456789'),
	(20, 'EE', '372', '', false, 7, 8, '', '123456789'),
	(21, 'MD', '373', '0', false, 8, 8, '', '123456789'),
	(22, 'UZ', '998', '8', false, 9, 9, '810', '123456789'),
	(23, 'TJ', '992', '8', false, 9, 9, '810', '123456789'),
	(24, 'KG', '996', '0', false, 9, 9, '', '123456789'),
	(25, 'GE', '995', '0', false, 9, 9, '', '123456789'),
	(26, 'AM', '374', '0', false, 8, 8, '', '123456789'),
	(27, 'AZ', '994', '0', false, 9, 9, '', '123456789'),
	(28, 'TR', '90', '0', false, 10, 10, '', '123456789'),
	(29, 'IL', '972', '0', false, 8, 9, '', '123456789'),
	(30, 'AE', '971', '0', false, 8, 9, '', '123456789'),
	(31, 'CN', '86', '0', false, 10, 11, '', '123456789'),
	(32, 'IN', '91', '0', false, 10, 10, '', '123456789');

-- A national significant number valid for country c.
CREATE FUNCTION mcd_phone_nsn_ok(c phone_countries, nsn text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
	SELECT nsn <> '' AND length(nsn) BETWEEN c.nsn_min AND c.nsn_max
		AND position(left(nsn, 1) IN c.nsn_first) > 0
$$;

-- Length of the longest alternative of 'a|b|c' that prefixes d, 0: none.
CREATE FUNCTION mcd_phone_alt_prefix(alts text, d text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
	SELECT COALESCE(max(length(a)), 0)
	FROM unnest(string_to_array(COALESCE(alts, ''), '|')) a
	WHERE a <> '' AND left(d, length(a)) = a
$$;

-- The country whose code starts d (longest code; table order among
-- equals), optionally only one whose national number then fits.
CREATE FUNCTION mcd_phone_cc_match(d text, need_fit boolean) RETURNS phone_countries
LANGUAGE sql STABLE AS $$
	SELECT c FROM phone_countries c
	WHERE left(d, length(c.cc)) = c.cc
	  AND (NOT need_fit OR mcd_phone_nsn_ok(c, substr(d, length(c.cc) + 1)))
	ORDER BY length(c.cc) DESC, c.ord
	LIMIT 1
$$;

CREATE FUNCTION mcd_phone_emit(cc text, nsn text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN length(cc) + length(nsn) BETWEEN 7 AND 15
		THEN '+' || cc || nsn ELSE 'invalid' END
$$;

-- Rule 8a: d = country code + national number.
CREATE FUNCTION mcd_phone_international(d text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
	c phone_countries;
	f phone_countries;
	nsn text;
	t integer;
BEGIN
	c := mcd_phone_cc_match(d, false);
	IF c.iso2 IS NULL THEN
		IF length(d) BETWEEN 7 AND 15 AND left(d, 1) <> '0' THEN
			RETURN mcd_phone_emit('', d);
		END IF;
		RETURN 'invalid';
	END IF;
	f := mcd_phone_cc_match(d, true);
	IF f.iso2 IS NOT NULL THEN
		c := f;
	END IF;
	nsn := substr(d, length(c.cc) + 1);
	IF mcd_phone_nsn_ok(c, nsn) THEN
		RETURN mcd_phone_emit(c.cc, nsn);
	END IF;
	-- "+44 (0)20 …": a trunk prefix written after the code.
	t := mcd_phone_alt_prefix(c.trunk, nsn);
	IF t > 0 AND mcd_phone_nsn_ok(c, substr(nsn, t + 1)) THEN
		RETURN mcd_phone_emit(c.cc, substr(nsn, t + 1));
	END IF;
	RETURN 'invalid';
END
$$;

-- Rule 8b: d in the national format of country c.
CREATE FUNCTION mcd_phone_national(c phone_countries, d text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
	a text;
	o phone_countries;
BEGIN
	IF length(d) <= 6 THEN
		RETURN 'internal';
	END IF;
	FOREACH a IN ARRAY string_to_array(c.trunk, '|') LOOP
		IF a <> '' AND left(d, length(a)) = a
		   AND mcd_phone_nsn_ok(c, substr(d, length(a) + 1)) THEN
			RETURN mcd_phone_emit(c.cc, substr(d, length(a) + 1));
		END IF;
	END LOOP;
	IF mcd_phone_nsn_ok(c, d) THEN
		RETURN mcd_phone_emit(c.cc, d);
	END IF;
	IF left(d, length(c.cc)) = c.cc AND mcd_phone_nsn_ok(c, substr(d, length(c.cc) + 1)) THEN
		RETURN mcd_phone_emit(c.cc, substr(d, length(c.cc) + 1));
	END IF;
	o := mcd_phone_cc_match(d, true);
	IF o.iso2 IS NOT NULL THEN
		RETURN mcd_phone_emit(o.cc, substr(d, length(o.cc) + 1));
	END IF;
	RETURN 'invalid';
END
$$;

-- The whole of telephony/phone.c's phone_normalize(): '+E164', or the
-- error class 'withheld' / 'internal' / 'invalid' (phones.tsv's words).
CREATE FUNCTION mcd_phone_classify(p_in text, p_country text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
	c phone_countries;
	s text;
	m text;
	p integer;
	tail text;
	par text;
	d text;
	plus boolean;
	ip integer;
	-- Separators: blanks, - . ( ) /, NBSP, Unicode spaces and dashes, minus.
	sep constant text := '[ \t\-.()/\u00a0\u2000-\u200b\u2010-\u2015\u202f\u2212]';
	word constant text := '[a-z\u0080-\uffff]';
BEGIN
	SELECT * INTO c FROM phone_countries WHERE iso2 = upper(COALESCE(p_country, 'RU'));
	IF c.iso2 IS NULL THEN
		RETURN 'invalid';
	END IF;
	IF p_in IS NULL THEN
		RETURN 'withheld';
	END IF;
	IF octet_length(p_in) > 256 THEN
		RETURN 'invalid';
	END IF;
	-- 1-4: lower case, trim blanks and quotes, unwrap <…>, URIs, params.
	s := lower(p_in);
	s := regexp_replace(s, '^[ \t"''\u00a0]+', '');
	s := regexp_replace(s, '[ \t"''\r\n\u00a0]+$', '');
	m := substring(s FROM '<([^>]*)>');
	IF m IS NOT NULL THEN
		s := regexp_replace(regexp_replace(m, '^[ \t"''\u00a0]+', ''),
				    '[ \t"''\r\n\u00a0]+$', '');
	END IF;
	IF s LIKE 'sip:%' OR s LIKE 'sips:%' THEN
		s := substr(s, position(':' IN s) + 1);
		s := split_part(s, '@', 1);
	ELSIF s LIKE 'tel:%' THEN
		s := substr(s, 5);
	END IF;
	s := split_part(s, '?', 1);
	-- %XX escapes (ASCII ones; a CRM never stores others).
	LOOP
		m := substring(s FROM '%[0-7][0-9a-f]');
		EXIT WHEN m IS NULL;
		s := replace(s, m, chr(('x' || lpad(substr(m, 2), 8, '0'))::bit(32)::integer));
	END LOOP;
	IF position(';' IN s) > 0 THEN
		FOREACH par IN ARRAY (string_to_array(s, ';'))[2:] LOOP
			IF par LIKE 'ext=%' AND substr(par, 5) !~ '^[0-9]*$' THEN
				RETURN 'invalid';
			END IF;
		END LOOP;
		s := split_part(s, ';', 1);
	END IF;
	s := regexp_replace(regexp_replace(s, '^[ \t"''\u00a0]+', ''), '[ \t"''\r\n\u00a0]+$', '');
	-- 5: nothing presented, or a withheld marker.
	IF s ~ ('^' || sep || '*$') OR s IN ('anonymous', 'unavailable', 'unknown',
		'restricted', 'withheld', 'private', 'blocked', 'no callerid',
		'nocallerid', 'no caller id', 'not available', 'presentation restricted',
		'аноним', 'анонимный', 'скрыт', 'скрытый', 'скрытый номер',
		'номер скрыт', 'неизвестный', 'неизвестно') THEN
		RETURN 'withheld';
	END IF;
	-- 6: an extension keyword at a word boundary ends the number.
	p := regexp_instr(s, '(?<!' || word || ')(extension|ext|добавочный|доб|вн|x)(?!' || word || ')|[,#]');
	IF p > 0 THEN
		tail := substring(s FROM p);
		tail := regexp_replace(tail, '^(extension|ext|добавочный|доб|вн|x|,|#)', '');
		-- a keyword may follow the comma: "…67, доб. 5"
		tail := regexp_replace(tail, '^[ .:=,#-]*(extension|ext|добавочный|доб|вн|x)(?!' || word || ')', '');
		IF tail !~ '^[ .:=,#-]*[0-9 )]*$'
		   OR length(regexp_replace(tail, '[^0-9]', '', 'g')) NOT BETWEEN 1 AND 10 THEN
			RETURN 'invalid';
		END IF;
		s := left(s, p - 1);
	END IF;
	-- 7: digits, one leading '+', separators.
	s := regexp_replace(s, sep, '', 'g');
	IF s !~ '^\+?[0-9]*$' THEN
		RETURN 'invalid';
	END IF;
	plus := left(s, 1) = '+';
	d := ltrim(s, '+');
	IF d = '' THEN
		RETURN 'invalid';
	END IF;
	-- 8
	IF plus THEN
		IF length(d) = 11 AND d LIKE '89%' AND c.cc = '7'
		   AND mcd_phone_alt_prefix(c.trunk, '8') > 0 THEN
			RETURN mcd_phone_national(c, d);
		END IF;
		RETURN mcd_phone_international(d);
	END IF;
	IF d LIKE '00%' AND substr(d, 3, 1) <> '0' THEN
		RETURN mcd_phone_international(substr(d, 3));
	END IF;
	ip := mcd_phone_alt_prefix(c.intl, d);
	IF ip > 0 AND length(d) > ip + 6 THEN
		RETURN mcd_phone_international(substr(d, ip + 1));
	END IF;
	RETURN mcd_phone_national(c, d);
END
$$;

-- E.164 or NULL (withheld, internal, invalid).
CREATE FUNCTION mcd_phone_e164(p_in text, p_country text) RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT CASE WHEN r LIKE '+%' THEN r END
	FROM mcd_phone_classify(p_in, p_country) r
$$;

-- Keeps client_phones.phone_e164 from phone, read with the default
-- country --migrate recorded (mcd_settings 'phone.default_country').
CREATE FUNCTION mcd_client_phones_normalize() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	NEW.phone_e164 := mcd_phone_e164(NEW.phone,
		COALESCE((SELECT value FROM mcd_settings WHERE key = 'phone.default_country'), 'RU'));
	RETURN NEW;
END
$$;

CREATE TRIGGER client_phones_normalize
	BEFORE INSERT OR UPDATE OF phone ON client_phones
	FOR EACH ROW EXECUTE FUNCTION mcd_client_phones_normalize();

-- Phones stored before this migration.
UPDATE client_phones SET phone = phone;
