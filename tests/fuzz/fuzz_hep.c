/* libFuzzer target: HEPv3 decoder, the TCP splitter and the SIP payload. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "hep.h"
#include "sip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hep_stream *s;
	char buf[HEP_ADDR_STRLEN];
	const uint8_t *p;
	size_t len, off = 0;
	hep_msg m;
	sip_msg sm;

	(void)hep_sniff(data, size);
	if (hep_decode(data, size, &m) == 0) {
		(void)hep_msg_src(&m, buf, sizeof(buf));
		(void)hep_msg_dst(&m, buf, sizeof(buf));
		(void)hep_msg_ts_usec(&m);
		if (hep_msg_is_sip(&m))
			(void)sip_parse((const char *)m.payload, m.payload_len,
					&sm);
	}
	/* The same bytes as a TCP stream, fed in uneven pieces. */
	if (!(s = hep_stream_new()))
		return 0;
	while (off < size) {
		size_t piece =
		    (size - off) > 7 ? 7 + data[off] % 64 : size - off;
		if (piece > size - off)
			piece = size - off;
		off += hep_stream_feed(s, data + off, piece);
		int r;
		while ((r = hep_stream_next(s, &p, &len)) == 0)
			(void)hep_decode(p, len, &m);
		if (r != -EAGAIN)
			break; /* out of sync: a listener closes the connection
				*/
	}
	s = hep_stream_free(s);
	return 0;
}
