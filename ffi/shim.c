/* One exported function per DPDK static inline (or macro) that vnicd calls.
 * Built with the exact cflags of `pkg-config --cflags libdpdk` so the inlines see the same
 * rte_config.h as the shared libraries. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_ring_peek_zc.h>
#include "shim.h"

struct rte_mbuf *vnic_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int vnic_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n)
{ return rte_pktmbuf_alloc_bulk(mp, mbufs, n); }
void vnic_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void vnic_rte_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int n) { rte_pktmbuf_free_bulk(mbufs, n); }
char *vnic_rte_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, char *); }
char *vnic_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
uint32_t vnic_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t vnic_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
unsigned int vnic_rte_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n)
{ return rte_ring_enqueue_burst(r, objs, n, NULL); }
unsigned int vnic_rte_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n)
{ return rte_ring_dequeue_burst(r, objs, n, NULL); }
/* Single-producer / single-consumer variants: no run-time sync-type dispatch. Only for rings
 * whose one producer (consumer) is the caller. */
unsigned int vnic_rte_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n)
{ return rte_ring_sp_enqueue_burst(r, objs, n, NULL); }
unsigned int vnic_rte_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n)
{ return rte_ring_sc_dequeue_burst(r, objs, n, NULL); }
unsigned int vnic_rte_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned int vnic_rte_ring_free_count(const struct rte_ring *r) { return rte_ring_free_count(r); }
unsigned int vnic_rte_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }
unsigned int vnic_rte_mempool_in_use_count(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }
unsigned int vnic_rte_lcore_id(void) { return rte_lcore_id(); }
uint64_t vnic_rte_rdtsc(void) { return rte_rdtsc(); }
uint64_t vnic_rte_get_tsc_hz(void) { return rte_get_tsc_hz(); }
int vnic_rte_errno(void) { return rte_errno; }

/* Zero-copy (in-place) ring access for clients, so that a client killed at any instant leaves
 * every mbuf in a ring that the server can recover (see vnic_ring_recover_client). */
unsigned int vnic_ring_dequeue_zc_start(struct rte_ring *r, unsigned int n, void ***p1, unsigned int *n1, void ***p2)
{
	struct rte_ring_zc_data z = { 0 };
	unsigned int got = rte_ring_dequeue_zc_burst_start(r, n, &z, NULL);
	*p1 = z.ptr1; *n1 = z.n1; *p2 = z.ptr2;
	return got;
}
void vnic_ring_dequeue_zc_finish(struct rte_ring *r, unsigned int n) { rte_ring_dequeue_zc_finish(r, n); }
unsigned int vnic_ring_enqueue_zc_start(struct rte_ring *r, unsigned int n, void ***p1, unsigned int *n1, void ***p2)
{
	struct rte_ring_zc_data z = { 0 };
	unsigned int got = rte_ring_enqueue_zc_burst_start(r, n, &z, NULL);
	*p1 = z.ptr1; *n1 = z.n1; *p2 = z.ptr2;
	return got;
}
void vnic_ring_enqueue_zc_finish(struct rte_ring *r, unsigned int n) { rte_ring_enqueue_zc_finish(r, n); }

/* After a client died (and the data core no longer uses its rings): undo or complete the
 * in-place move it may have been in the middle of. The client moves rx -> tx as
 * (1) rx start, (2) tx start, (3) copy pointers, (4) rx finish, (5) tx finish, so:
 * rx unfinished => every mbuf is still in rx: roll rx and tx back;
 * rx finished, tx unfinished => the pointers were written before (4): roll tx forward.
 * Returns 0 (nothing to do), 1 (rolled back) or 2 (rolled forward). */
int vnic_ring_recover_client(struct rte_ring *rx, struct rte_ring *tx)
{
	if (rx->cons.head != rx->cons.tail) {
		rx->cons.head = rx->cons.tail;
		tx->prod.head = tx->prod.tail;
		return 1;
	}
	if (tx->prod.head != tx->prod.tail) {
		__atomic_store_n(&tx->prod.tail, tx->prod.head, __ATOMIC_RELEASE);
		return 2;
	}
	return 0;
}
