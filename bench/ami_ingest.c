/*
 * ami_ingest: missedcalld's AMI ingest path measured on its own: the real
 * ami_client (bufferevent, parser, adapter, call tracker) connected to a
 * server that streams a pre-generated capture (ami_blast). Counts messages
 * the client handed to the tracker and outcomes the tracker decided, and
 * prints one JSON line once EVENTS messages arrived:
 *   {"events":N,"seconds":S,"outcomes":K,"live_calls":L}
 *
 *   ami_ingest PORT EVENTS
 *
 * The clock starts at the first message after login, as for the peers.
 * The configuration goes through the daemon's own loader, so defaults are
 * the ones a user gets.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ami_client.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "pbx.h"

struct bench {
	ami_client *client;
	struct event_base *base;
	uint64_t want, t0, outcomes;
	double c0; /* CPU seconds at t0 */
	int status;
};

static void on_outcome(void *ud, const call_outcome *o)
{
	struct bench *b = ud;
	(void)o;
	b->outcomes++;
}

/* CPU time (user + system): stable on a shared machine, unlike wall time. */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Checked after every loop iteration (EVLOOP_ONCE): no polling timer, so
 * the clock starts and stops at the wakeup that delivered the messages. */
static void check(struct bench *b)
{
	ami_client_stats st;

	ami_client_get_stats(b->client, &st);
	if (b->t0 == 0 && st.messages > 1) {
		b->t0 = mono_usec();
		b->c0 = cpu_s();
	}
	/* +1: the login response is a message too */
	if (st.messages >= b->want + 1) {
		double s = (double)(mono_usec() - b->t0) / 1e6;
		printf("{\"events\":%llu,\"seconds\":%.6f,\"cpu_seconds\":%.6f,"
		       "\"outcomes\":%llu,\"live_calls\":%zu}\n",
		       (unsigned long long)(st.messages - 1), s, cpu_s() - b->c0,
		       (unsigned long long)b->outcomes,
		       call_tracker_live_calls(ami_client_tracker(b->client)));
		b->status = 0;
	}
}

int main(int argc, char **argv)
{
	char secret_path[] = "/tmp/ami_ingest_secretXXXXXX";
	char text[1024];
	struct bench b = {.status = 1};
	mcd_config cfg;
	cfg_report *r;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: ami_ingest PORT EVENTS\n");
		return 2;
	}
	b.want = strtoull(argv[2], NULL, 10);
	log_init();
	log_set_level(LOG_LVL_WARNING);
	metrics_init();
	fd = mkstemp(secret_path);
	if (fd < 0 || write(fd, "pw\n", 3) != 3) {
		perror("secret");
		return 1;
	}
	close(fd);
	snprintf(text, sizeof(text),
		 "database = { conninfo = \"hostaddr=127.0.0.1\"; };\n"
		 "pbx = ( { name = \"bench\"; type = \"ami\";"
		 " host = \"127.0.0.1\"; port = %s; username = \"admin\";"
		 " secret_file = \"%s\"; trunks = [\"PJSIP/provider\"];"
		 " inbound_contexts = [\"from-pstn\"]; } );\n",
		 argv[1], secret_path);
	r = cfg_report_new();
	if (mcd_config_load_string(text, "bench.conf", &cfg, r) < 0) {
		cfg_report_print(r, stderr);
		return 1;
	}
	cfg_report_free(r);
	unlink(secret_path);

	b.base = event_base_new();
	call_sink sink = {.outcome = on_outcome, .userdata = &b};
	if (ami_client_new(b.base, NULL, cfg_list_at(&cfg.pbx, sizeof(pbx_cfg), 0),
			   &cfg.calls, &sink, &b.client) < 0) {
		fprintf(stderr, "ami_ingest: client failed\n");
		return 1;
	}
	while (b.status != 0 && event_base_loop(b.base, EVLOOP_ONCE) == 0)
		check(&b);
	ami_client_free(b.client);
	event_base_free(b.base);
	mcd_config_free(&cfg);
	metrics_done();
	return b.status;
}
