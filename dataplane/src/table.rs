//! The forwarding table a data core runs: per vNIC queue, the VF queues and the client side, plus
//! in-core clients and peer announcements. Built by the control thread, immutable once published
//! (see [`crate::worker`]).
use crate::port::{RxQueue, TxQueue};
use crate::reroute::{Backup, DeviceHealth};
use crate::ring::Ring;
use crate::txwatch::TxWatch;
use std::sync::Arc;

/// Index of a vNIC's counter slot on a data core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VnicSlot(pub u32);

/// A shm client's ring pair: VF → `to_client`, `from_client` → VF (zero copy: the client works on
/// the very mbufs the VF filled).
#[derive(Debug, Clone)]
pub struct ClientRings {
    // Raw pointers cached for the hot loop; the Arcs below keep the rings alive as long as any
    // table that names them (tables are freed on the control thread after the grace period).
    pub(crate) to_client_raw: *mut dpdk_sys::rte_ring,
    pub(crate) from_client_raw: *mut dpdk_sys::rte_ring,
    _to_client: Arc<Ring>,
    _from_client: Arc<Ring>,
    /// Capacity of `to_client` (fixed at creation; never derived from live counts).
    pub(crate) to_client_cap: u32,
}

impl ClientRings {
    /// The pair a shm client attached with.
    pub fn new(to_client: Arc<Ring>, from_client: Arc<Ring>) -> Self {
        let cap = to_client.capacity();
        ClientRings {
            to_client_raw: to_client.as_ptr(),
            from_client_raw: from_client.as_ptr(),
            to_client_cap: cap,
            _to_client: to_client,
            _from_client: from_client,
        }
    }
}

/// The client side of a queue entry: where frames from the VF go and frames for the VF come
/// from. A new client transport is one more variant here, served by the same poll loop.
#[derive(Debug, Clone)]
pub enum ClientSide {
    /// A DPDK secondary process (or in-core client) on a ring pair: zero copy.
    Rings(ClientRings),
    /// A vhost-user frontend (QEMU guest, virtio-user): one copy into and out of its memory.
    Vhost(crate::vhost::VhostQueue),
    /// An ethdev port's queue pair facing the client (a `net_memif` server port: the memif
    /// protocol copies in both directions).
    Ethdev(EthdevClient),
}

/// A client reached through an ethdev queue pair: frames for the client go out on `tx`,
/// frames from it come in on `rx`.
#[derive(Debug, Clone, Copy)]
pub struct EthdevClient {
    pub(crate) tx: TxQueue,
    pub(crate) rx: RxQueue,
}

impl EthdevClient {
    /// The client port's queue pair.
    pub fn new(rx: RxQueue, tx: TxQueue) -> Self {
        EthdevClient { tx, rx }
    }
}

/// One vNIC queue as the data core sees it: VF rx → client, client → VF tx.
/// It receives from every operational backing device (so frames still arriving on the old device
/// after a switch reach the client) and transmits on the active one.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub(crate) rx: RxQueue,
    pub(crate) also_rx: Vec<RxQueue>,
    pub(crate) tx: TxQueue,
    pub(crate) client: ClientSide,
    pub(crate) slot: VnicSlot,
    /// When set, client tx frames must carry this source MAC (SR-IOV style spoof check).
    pub(crate) spoof_mac: Option<[u8; 6]>,
    /// The active device's flag (fast reroute); `None`: never rerouted.
    pub(crate) health: Option<Arc<DeviceHealth>>,
    /// Where to transmit the moment the active device is down.
    pub(crate) backup: Option<Backup>,
    /// TSC ticks of refused-everything after which the data core marks the active device down
    /// (0: it never does), and of a consumer standing still after which it turns to the backup.
    pub(crate) refuse_window: u64,
    /// Where the active tx queue's consumer shows its progress (memif); only with a backup.
    pub(crate) watch: Option<Arc<TxWatch>>,
}

impl QueueEntry {
    /// Forward between the active backing device's queue pair and a client's ring pair.
    pub fn new(
        rx: RxQueue,
        tx: TxQueue,
        to_client: Arc<Ring>,
        from_client: Arc<Ring>,
        slot: VnicSlot,
    ) -> Self {
        Self::with_client(
            rx,
            tx,
            ClientSide::Rings(ClientRings::new(to_client, from_client)),
            slot,
        )
    }
    /// Forward between the active backing device's queue pair and any client side.
    pub fn with_client(rx: RxQueue, tx: TxQueue, client: ClientSide, slot: VnicSlot) -> Self {
        QueueEntry {
            rx,
            also_rx: Vec::new(),
            tx,
            client,
            slot,
            spoof_mac: None,
            health: None,
            backup: None,
            refuse_window: 0,
            watch: None,
        }
    }
    /// Fast reroute: the active device's flag `health`, the entry's backup, and how long the
    /// device may refuse every frame before the data core marks it down itself (`refuse_us`,
    /// 0: never). Without a backup the data core never does: there is nowhere to reroute, and
    /// failing the only device of a vNIC whose peer is merely slow (a busy or descheduled peer
    /// refuses everything for a while) would cut a working path; a sole device that stays
    /// stalled is the control thread's `tx_stall_ms` check's to fail.
    pub fn with_reroute(
        mut self,
        health: Arc<DeviceHealth>,
        backup: Option<Backup>,
        refuse_us: u32,
    ) -> Self {
        self.health = Some(health);
        self.refuse_window = match backup {
            Some(_) => crate::eal::tsc_hz() * refuse_us as u64 / 1_000_000,
            None => 0,
        };
        self.backup = backup;
        self
    }
    /// Watch the active tx queue's consumer (see [`TxWatch`]): once it stands still with frames
    /// waiting for the refuse window, the data core transmits on the backup until it moves
    /// again. Needs a backup and a refuse window ([`Self::with_reroute`]); ignored otherwise.
    pub fn with_tx_watch(mut self, watch: Option<Arc<TxWatch>>) -> Self {
        self.watch = watch.filter(|_| self.refuse_window > 0 && self.backup.is_some());
        self
    }
    /// Also receive from `rx` (a standby backing device's queue).
    pub fn also_rx(mut self, rx: RxQueue) -> Self {
        self.also_rx.push(rx);
        self
    }
    /// Drop (and count) client tx frames whose source MAC is not `mac`.
    pub fn with_spoof_check(mut self, mac: [u8; 6]) -> Self {
        self.spoof_mac = Some(mac);
        self
    }
    /// The rx queue polled.
    pub fn rx(&self) -> RxQueue {
        self.rx
    }
    /// The tx queue used.
    pub fn tx(&self) -> TxQueue {
        self.tx
    }
    /// The client side.
    pub fn client(&self) -> &ClientSide {
        &self.client
    }
    /// Capacity the data core assumes for the client's rx ring.
    /// (Rings only: the other sides report their room per burst.)
    pub fn to_client_capacity(&self) -> Option<u32> {
        match &self.client {
            ClientSide::Rings(r) => Some(r.to_client_cap),
            ClientSide::Vhost(_) | ClientSide::Ethdev(_) => None,
        }
    }
}

/// What an in-core client does with what it receives (demo and peak-rate benchmarks: a client
/// that runs on the data core itself, so no third busy poller competes for a CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineMode {
    /// Send back to the sender: destination ← source, source ← the vNIC's own MAC.
    Reflect,
    /// Send every packet back untouched (pointer moves only).
    Bounce,
}

/// A client served on the data core: reads its rx ring, writes its tx ring.
#[derive(Debug, Clone)]
pub struct InlineClient {
    pub(crate) rx_raw: *mut dpdk_sys::rte_ring,
    pub(crate) tx_raw: *mut dpdk_sys::rte_ring,
    _rx: Arc<Ring>,
    _tx: Arc<Ring>,
    pub(crate) mode: InlineMode,
    pub(crate) slot: VnicSlot,
    pub(crate) mac: [u8; 6],
}

impl InlineClient {
    /// A client over a vNIC queue's rings (the same `Arc`s as its [`QueueEntry`]); `mac` is the
    /// vNIC's own address.
    pub fn new(
        rx: Arc<Ring>,
        tx: Arc<Ring>,
        mode: InlineMode,
        slot: VnicSlot,
        mac: [u8; 6],
    ) -> Self {
        InlineClient {
            rx_raw: rx.as_ptr(),
            tx_raw: tx.as_ptr(),
            _rx: rx,
            _tx: tx,
            mode,
            slot,
            mac,
        }
    }
}

/// Frames the control thread queued for a device (peer announcements after a switch). Present
/// in a table only while an announcement is in flight, so it costs nothing otherwise. The data
/// core sends them because it is the only thread that may use the device's tx queue.
#[derive(Debug, Clone)]
pub struct Announce {
    pub(crate) ring_raw: *mut dpdk_sys::rte_ring,
    _ring: Arc<Ring>,
    pub(crate) tx: TxQueue,
}

impl Announce {
    /// Send what the control thread enqueues on `ring` out of `tx`.
    pub fn new(ring: Arc<Ring>, tx: TxQueue) -> Self {
        Announce {
            ring_raw: ring.as_ptr(),
            _ring: ring,
            tx,
        }
    }
}

/// An immutable forwarding table for one data core.
#[derive(Debug, Default)]
pub struct FwdTable {
    pub(crate) generation: u64,
    pub(crate) queues: Vec<QueueEntry>,
    pub(crate) clients: Vec<InlineClient>,
    pub(crate) announce: Vec<Announce>,
    /// Entries served in the tx direction only: a vNIC about to leave this appliance sends what
    /// its client still has to its VF and receives nothing more.
    pub(crate) drain: Vec<QueueEntry>,
}

// SAFETY: the raw ring pointers are owned by the Arcs held alongside; a table is read by one data
// core and dropped by the control thread only after that core stopped using it.
unsafe impl Send for FwdTable {}
// SAFETY: shared read-only between the control thread (which built it) and one data core.
unsafe impl Sync for FwdTable {}

impl FwdTable {
    /// A table with these queue entries and in-core clients.
    pub fn new(queues: Vec<QueueEntry>, clients: Vec<InlineClient>) -> Self {
        FwdTable {
            generation: 0,
            queues,
            clients,
            announce: Vec::new(),
            drain: Vec::new(),
        }
    }
    /// Add tx-only entries (see `drain`).
    pub fn with_drain(mut self, d: Vec<QueueEntry>) -> Self {
        self.drain = d;
        self
    }
    /// Add announcement senders.
    pub fn with_announce(mut self, a: Vec<Announce>) -> Self {
        self.announce = a;
        self
    }
    /// Generation assigned at publish time.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Queue entries.
    pub fn queues(&self) -> &[QueueEntry] {
        &self.queues
    }
    /// Every counter slot the table names.
    pub(crate) fn slots(&self) -> impl Iterator<Item = VnicSlot> + '_ {
        self.clients
            .iter()
            .map(|c| c.slot)
            .chain(self.queues.iter().map(|q| q.slot))
            .chain(self.drain.iter().map(|q| q.slot))
    }
}
