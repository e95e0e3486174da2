/* Exported wrappers of DPDK's static inline functions and macros, which bindgen cannot bind. */
#ifndef VNIC_SHIM_H
#define VNIC_SHIM_H
#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_mempool.h>

struct rte_mbuf *vnic_rte_pktmbuf_alloc(struct rte_mempool *mp);
int vnic_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n);
void vnic_rte_pktmbuf_free(struct rte_mbuf *m);
void vnic_rte_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int n);
char *vnic_rte_pktmbuf_mtod(struct rte_mbuf *m);
char *vnic_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint32_t vnic_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t vnic_rte_pktmbuf_data_len(const struct rte_mbuf *m);
unsigned int vnic_rte_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int vnic_rte_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int vnic_rte_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int vnic_rte_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int vnic_rte_ring_count(const struct rte_ring *r);
unsigned int vnic_rte_ring_free_count(const struct rte_ring *r);
unsigned int vnic_rte_mempool_avail_count(const struct rte_mempool *mp);
unsigned int vnic_rte_mempool_in_use_count(const struct rte_mempool *mp);
unsigned int vnic_rte_lcore_id(void);
uint64_t vnic_rte_rdtsc(void);
uint64_t vnic_rte_get_tsc_hz(void);
int vnic_rte_errno(void);

unsigned int vnic_ring_dequeue_zc_start(struct rte_ring *r, unsigned int n, void ***p1, unsigned int *n1, void ***p2);
void vnic_ring_dequeue_zc_finish(struct rte_ring *r, unsigned int n);
unsigned int vnic_ring_enqueue_zc_start(struct rte_ring *r, unsigned int n, void ***p1, unsigned int *n1, void ***p2);
void vnic_ring_enqueue_zc_finish(struct rte_ring *r, unsigned int n);
int vnic_ring_recover_client(struct rte_ring *rx, struct rte_ring *tx);


/* Tx progress of a net_memif queue (memif_watch.c). */
struct vnic_memif_txw {
	const void *queue;
	const void *proc;
	const void *pmd;
	uint8_t server;
};
int vnic_memif_txw_init(uint16_t port, uint16_t queue, struct vnic_memif_txw *w);
int vnic_memif_txw_read(const struct vnic_memif_txw *w, uint16_t *peer, uint16_t *own);

#endif
