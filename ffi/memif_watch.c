/* Tx progress of a net_memif queue: where its ring keeps the peer's index.
 *
 * DPDK 22.11's memif raises no link interrupt and reports no tx descriptor status, and a peer
 * that dies (a killed process) closes its socket only once the kernel has torn the process
 * down (20-30 ms here): until then its ring swallows every frame sent to it. The ring itself
 * shows the peer stopped: its index (the memif protocol's head/tail, a layout shared by every
 * memif implementation) no longer moves while frames wait. The way to that ring goes through
 * the PMD's private structures, which DPDK does not install: the prefixes below follow
 * drivers/net/memif/rte_eth_memif.h and lib/ethdev/ethdev_driver.h of 22.11, and
 * vnic_memif_txw_init checks them against what the public API says (the port's name, its tx
 * queue array, the queue's port id and ring type against the device's role, the ring's cookie)
 * before anything relies on them; a mismatch leaves the device without a watch. */
#include <errno.h>
#include <string.h>
#include <rte_ethdev.h>
#include "shim.h"

#define MEMIF_COOKIE 0x3E31F20
#define MEMIF_FLAG_CONNECTED (1 << 1)
#define MEMIF_MAX_LOG2_RING 14
#define MEMIF_MAX_REGIONS 256

/* memif.h: the ring header (cache-line aligned fields). */
struct w_ring {
	uint32_t cookie;
	uint16_t flags;
	uint16_t head;
	uint8_t pad[64 - 8];
	uint16_t tail;
};

/* rte_eth_memif.h */
struct w_region {
	void *addr;
	uint64_t region_size;
	int fd;
	uint32_t pkt_buffer_offset;
};
struct w_queue {
	void *mempool;
	void *pmd; /* not set for tx queues in 22.11: the device's dev_private is */
	int type; /* 0: C2S (client tx), 1: S2C (server tx) */
	uint16_t region;
	uint16_t in_port;
	uint32_t ring_offset;
	uint16_t last_head;
	uint16_t last_tail;
	void *buffers;
	uint64_t n_pkts;
	uint64_t n_bytes;
	void *intr_handle;
	uint8_t log2_ring_size;
};
struct w_pmd {
	uint32_t id;
	int role; /* 0: server, 1: client */
	uint32_t flags;
};
struct w_proc {
	struct w_region *regions[MEMIF_MAX_REGIONS];
	uint16_t regions_num;
};

/* ethdev_driver.h: the prefix of struct rte_eth_dev and of struct rte_eth_dev_data. */
struct w_dev_data {
	char name[RTE_ETH_NAME_MAX_LEN];
	void **rx_queues;
	void **tx_queues;
	uint16_t nb_rx_queues;
	uint16_t nb_tx_queues;
	uint16_t sriov[3]; /* struct rte_eth_dev_sriov */
	struct w_pmd *dev_private;
};
struct w_dev {
	void *fns[6];
	struct w_dev_data *data;
	struct w_proc *process_private;
};

/* Exported by librte_ethdev (INTERNAL); ethdev_driver.h, which declares it, is not installed. */
struct w_dev *rte_eth_dev_allocated(const char *name);

int vnic_memif_txw_init(uint16_t port, uint16_t queue, struct vnic_memif_txw *w)
{
	struct rte_eth_dev_info info;
	char name[RTE_ETH_NAME_MAX_LEN];
	memset(w, 0, sizeof(*w));
	if (rte_eth_dev_info_get(port, &info) != 0 || info.driver_name == NULL)
		return -ENODEV;
	if (strcmp(info.driver_name, "net_memif") != 0)
		return -ENOTSUP;
	if (rte_eth_dev_get_name_by_port(port, name) != 0)
		return -ENODEV;
	struct w_dev *dev = rte_eth_dev_allocated(name);
	if (dev == NULL || dev->data == NULL || dev->process_private == NULL)
		return -EPROTO;
	struct w_dev_data *d = dev->data;
	if (strncmp(d->name, name, RTE_ETH_NAME_MAX_LEN) != 0 || queue >= d->nb_tx_queues ||
	    d->tx_queues == NULL || d->tx_queues != rte_eth_fp_ops[port].txq.data)
		return -EPROTO;
	struct w_queue *q = d->tx_queues[queue];
	const struct w_pmd *pmd = d->dev_private;
	if (q == NULL || pmd == NULL || q->in_port != port || (pmd->flags & ~0x1fu) != 0)
		return -EPROTO;
	/* A client transmits on its C2S ring, a server on its S2C ring. */
	if (!((pmd->role == 1 && q->type == 0) || (pmd->role == 0 && q->type == 1)))
		return -EPROTO;
	w->queue = q;
	w->pmd = pmd;
	w->proc = dev->process_private;
	w->server = q->type == 1;
	/* Connected now: the ring must carry the protocol's cookie. */
	uint16_t peer, own;
	int n = vnic_memif_txw_read(w, &peer, &own);
	return n >= 0 || n == -ENOTCONN ? 0 : -EPROTO;
}

int vnic_memif_txw_read(const struct vnic_memif_txw *w, uint16_t *peer, uint16_t *own)
{
	const struct w_queue *q = (const struct w_queue *)w->queue;
	const struct w_proc *p = (const struct w_proc *)w->proc;
	const struct w_pmd *pmd = (const struct w_pmd *)w->pmd;
	/* The PMD's own guard in its tx path: memif_disconnect clears the flag before it unmaps
	 * the regions (from DPDK's interrupt thread). */
	if (!(__atomic_load_n(&pmd->flags, __ATOMIC_ACQUIRE) & MEMIF_FLAG_CONNECTED))
		return -ENOTCONN;
	uint16_t region = q->region;
	if (region >= p->regions_num || region >= MEMIF_MAX_REGIONS || q->log2_ring_size > MEMIF_MAX_LOG2_RING)
		return -ENOTCONN;
	const struct w_region *r = p->regions[region];
	if (r == NULL || r->addr == NULL || (uint64_t)q->ring_offset + sizeof(struct w_ring) > r->region_size)
		return -ENOTCONN;
	const struct w_ring *ring = (const struct w_ring *)((const char *)r->addr + q->ring_offset);
	if (ring->cookie != MEMIF_COOKIE)
		return -EPROTO;
	uint16_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
	uint16_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
	uint16_t size = (uint16_t)(1u << q->log2_ring_size);
	if (w->server) {
		/* S2C: the client hands buffers back by moving head; we fill from tail. */
		*peer = head;
		*own = tail;
		return (uint16_t)(size - (uint16_t)(head - tail));
	}
	/* C2S: we fill from head, the server takes up to tail. */
	*peer = tail;
	*own = head;
	return (uint16_t)(head - tail);
}
