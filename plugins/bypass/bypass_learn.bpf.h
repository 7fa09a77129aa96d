/* BPF-only: folding one learning sample into its service, shared by
 * sockops (samples of TCP-path connections) and sockmsg (samples of
 * accelerated ones). The decision itself is taken by sockops alone, at the
 * next connection's establishment, from the scores kept here. */
#ifndef BPFMGR_BYPASS_LEARN_BPF_H
#define BPFMGR_BYPASS_LEARN_BPF_H

#include "bypass_common.h"

/* A sample "alternates" (request/response) when at least 3 in 4 of the
 * writes after the first answered the peer; one-way otherwise. */
static __always_inline __u32 bypass_sample_rr(const struct bypass_sock_state *st)
{
	return st->turns * 4 >= (st->msgs - 1) * 3 ? 1024 : 0;
}

static __always_inline __u64 bypass_ewma(__u64 old, __u64 x)
{
	return x >= old ? old + (x - old) / 4 : old - (old - x) / 4;
}

/* Folds the window of `st` into its service and resets the window.
 * Returns 1 when a sample was taken. */
static __always_inline int bypass_fold_sample(void *services_map,
					      struct bypass_sock_state *st)
{
	struct bypass_service_key key = {};
	struct bypass_service *svc;
	__u32 msgs = st->msgs;

	st->flags &= ~BYPASS_SK_LEARNING;
	if (!(st->flags & BYPASS_SK_SERVICE) || msgs < 2)
		return 0;
	key.netns = st->netns;
	key.port = st->port;
	svc = bypass_service_get(services_map, &key);
	if (!svc)
		return 0;
	__u32 rr = bypass_sample_rr(st);
	__u64 mean = st->bytes / msgs;
	/* A server that answers each arrival looks the same whether its
	 * client waits for the answer (request/response) or keeps streaming
	 * (an echo, a bulk exchange): only the client can tell. So a server
	 * end's alternating sample counts but moves no score; its one-way
	 * samples (downloads) do. */
	if (rr && (st->flags & BYPASS_SK_SERVER))
		goto counted;
	if (!svc->scored) {
		svc->scored = 1;
		svc->rr_score = rr;
		if (!rr)
			svc->avg_write = mean;
	} else {
		svc->rr_score = (__u32)bypass_ewma(svc->rr_score, rr);
		if (!rr)
			svc->avg_write = svc->avg_write ? bypass_ewma(svc->avg_write, mean)
							: mean;
	}
counted:
	if (svc->queue_strikes)
		svc->queue_strikes--;
	svc->last_sample_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&svc->samples, 1);
	st->msgs = 0;
	st->turns = 0;
	st->bytes = 0;
	return 1;
}

#endif
