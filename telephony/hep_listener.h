/*
 * hep_listener: the call source of a `pbx` entry with type = "hep".
 *
 * Receives HEPv3 on the configured `listen` sockets ("udp:IP:PORT",
 * "tcp:IP:PORT", IPv6 as "udp:[::1]:9060") or on sockets systemd passes
 * with FileDescriptorName=hep, checks the auth key and capture agent id,
 * parses the SIP payload and follows the calls (sip_dialog) into its own
 * call tracker, which reports to the shared sink.
 *
 * UDP: a large receive buffer and batched recvmmsg() reads, bounded work
 * per wakeup. TCP: messages framed by their length, bounded connections.
 * Bad input is counted (missedcalld_hep_packets_total{pbx,result}) and
 * logged rate-limited; it never stops the listener.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "call_tracker.h"
#include "pbx.h"
#include "util.h"

struct event_base;

typedef struct hep_listener hep_listener;

/* Binds every listen address (or takes the systemd sockets) and starts
 * receiving. cfg is borrowed and must outlive the listener; policy and
 * sink are copied. Fails (-errno, logged) when a socket cannot be bound. */
int hep_listener_new(struct event_base *base, const pbx_cfg *cfg,
		     const call_policy *policy, const call_sink *sink,
		     hep_listener **ret) MCD_WUR;
/* Decides the calls still open as they stand, closes every socket. */
hep_listener *hep_listener_free(hep_listener *l);
void hep_listener_set_policy(hep_listener *l, const call_policy *policy);
/* Every socket is bound and watched. */
bool hep_listener_ready(const hep_listener *l);
/* "listening on udp:127.0.0.1:9060; 3 calls; 1520 packets" */
void hep_listener_status(const hep_listener *l, char *buf, size_t len);
/* The local port of the i-th socket (tests bind port 0), or -1. */
int hep_listener_port(const hep_listener *l, size_t i);
