/*
 * fuzz_phone: libFuzzer target for phone_normalize (caller IDs come from
 * PBXs and SIP headers: untrusted bytes).
 *
 * Oracles besides sanitizers: a success is "+" and 7-15 digits; the
 * result is a fixed point (normalising it again gives it back, whatever
 * the default country, but for the RU/KZ "+8 9…" reading); withheld inputs are what phone_is_withheld says.
 * The first input byte picks the default country.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phone.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n_countries;
	const phone_country *t = phone_country_table(&n_countries);
	char in[600], out[PHONE_E164_MAX], again[PHONE_E164_MAX];
	char ext[PHONE_EXT_MAX];
	const char *cc;
	int r;

	if (size < 1)
		return 0;
	cc = t[data[0] % n_countries].iso2;
	size = MCD_MIN(size - 1, sizeof(in) - 1);
	memcpy(in, data + 1, size);
	in[size] = '\0';

	r = phone_normalize_ext(in, cc, out, sizeof(out), ext, sizeof(ext));
	if (r == PHONE_E_WITHHELD && !phone_is_withheld(in))
		abort();
	if (r != 0)
		return 0;
	size_t len = strlen(out);
	if (out[0] != '+' || len < 8 || len > 16 ||
	    strspn(out + 1, "0123456789") != len - 1 ||
	    strspn(ext, "0123456789") != strlen(ext))
		abort();
	/* "+8 9xx xxx xx xx" is read as national in RU/KZ on purpose (the
	 * common misspelling of 8 9xx…), so such a result from another
	 * default country is a fixed point only there. */
	bool plus89 = len == 12 && out[1] == '8' && out[2] == '9';
	for (size_t i = 0; i < n_countries; i++) {
		if (plus89 && strcmp(t[i].cc, "7") == 0)
			continue;
		if (phone_normalize(out, t[i].iso2, again, sizeof(again)) != 0 ||
		    strcmp(again, out) != 0)
			abort();
	}
	return 0;
}
