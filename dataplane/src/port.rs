//! Ethdev ports (a backing device's VF) and their queues. Queues exist only through their port.
use crate::error::{c_name, check, Error, Result};
use crate::mbuf::{Burst, BURST};
use crate::mempool::Mempool;
use crate::reroute::{Detector, DeviceHealth};
use crate::ring::Ring;
use crate::txwatch::TxWatch;
use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

/// An ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);
/// A queue index on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);

/// Queue layout and buffers for [`Port::configure`].
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Number of rx queues (and tx queues): one per vNIC queue.
    pub queues: u16,
    /// Rx descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Tx descriptors per queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// MTU to set; devices that cannot set it (most vdevs) keep theirs.
    pub mtu: Option<u16>,
    /// Receive everything regardless of destination MAC (VFs filter otherwise).
    pub promiscuous: bool,
}

/// Link state as reported by `rte_eth_link_get_nowait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
}

/// Basic port counters (`rte_eth_stats_get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

/// A port we opened. Drop stops it, closes it and removes the device if we probed it.
#[derive(Debug)]
pub struct Port {
    id: PortId,
    name: String,
    devargs: String,
    probed_by_us: bool,
    queues: u16,
    started: bool,
    /// The device's down flag (fast reroute), set from DPDK's interrupt thread by the
    /// link-state and removal callbacks, by the data core and by health checks.
    health: Arc<DeviceHealth>,
    /// The callbacks are registered (with `health` as their argument).
    watching: bool,
    /// Per tx queue, where its consumer shows progress (net_memif only).
    tx_watch: Vec<Option<Arc<TxWatch>>>,
}

/// `RTE_ETH_DEV_INTR_LSC` (rte_ethdev.h; an `RTE_BIT32` macro, which bindgen cannot evaluate).
const INTR_LSC: u32 = 1 << 1;

const WATCHED: [dpdk_sys::rte_eth_event_type; 2] = [
    dpdk_sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_LSC,
    dpdk_sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_RMV,
];

/// Link-state and removal events, on DPDK's interrupt thread: mark the device down at once
/// (the data core reroutes at its next burst).
unsafe extern "C" fn on_event(
    port: u16,
    event: dpdk_sys::rte_eth_event_type,
    arg: *mut std::ffi::c_void,
    _ret: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: arg is the port's DeviceHealth, which the Port keeps alive until it unregisters
    // this callback (unregistering waits for a running callback).
    let h = unsafe { &*(arg as *const DeviceHealth) };
    if event == dpdk_sys::rte_eth_event_type_RTE_ETH_EVENT_INTR_RMV {
        h.mark_removed();
    } else {
        let mut l = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port and out pointer; the nowait variant does not sleep.
        let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(port, &mut l) };
        if ret == 0 && l.link_status() == 0 {
            h.mark_down(Detector::LinkEvent);
        }
    }
    0
}

/// A device string as DPDK's own devargs parser reads it: the bus that claims it and the device
/// name (the part before the arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    pub bus: String,
    pub name: String,
}

/// Parse devargs with `rte_devargs_parse` (after EAL init: the buses and PMDs are registered).
pub fn parse_devargs(devargs: &str) -> Result<DeviceId> {
    let cargs = c_name("devargs", devargs, 4000)?;
    // SAFETY: rte_devargs is plain data; all-zero is its documented initial state.
    let mut da: dpdk_sys::rte_devargs = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer and C string.
    let ret = unsafe { dpdk_sys::rte_devargs_parse(&mut da, cargs.as_ptr()) };
    check("rte_devargs_parse", || devargs.into(), ret)?;
    // SAFETY: on success `name` is a NUL-terminated array and `bus` a registered bus (or null);
    // rte_devargs_reset frees what the parse allocated.
    let id = unsafe {
        let name = CStr::from_ptr(da.name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let bus = if da.bus.is_null() {
            String::new()
        } else {
            CStr::from_ptr(dpdk_sys::rte_bus_name(da.bus))
                .to_string_lossy()
                .into_owned()
        };
        dpdk_sys::rte_devargs_reset(&mut da);
        DeviceId { bus, name }
    };
    Ok(id)
}

/// Whether an ethdev port of this name exists in this process (a device released with
/// `rte_dev_remove` no longer does).
pub fn ethdev_exists(name: &str) -> bool {
    port_by_name(name).is_ok()
}

fn port_by_name(name: &str) -> Result<PortId> {
    let cname = c_name("device", name, 63)?;
    let mut id = 0u16;
    // SAFETY: valid name, id is a valid out pointer.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    check("rte_eth_dev_get_port_by_name", || name.into(), ret)?;
    Ok(PortId(id))
}

impl Port {
    /// Open the port for a backing device. A vdev (`net_memif0,role=client,...`) is hot-plugged
    /// with `rte_dev_probe`; a PCI VF must have been allow-listed at EAL init and is looked up.
    pub fn open(devargs: &str) -> Result<Port> {
        let DeviceId { bus, name } = parse_devargs(devargs)?;
        let probed_by_us = if bus == "pci" {
            false
        } else {
            let cargs = c_name("devargs", devargs, 4000)?;
            // SAFETY: valid C string; probing runs on the calling (control) thread.
            let ret = unsafe { dpdk_sys::rte_dev_probe(cargs.as_ptr()) };
            check("rte_dev_probe", || devargs.into(), ret)?;
            true
        };
        let id = match port_by_name(&name) {
            Ok(id) => id,
            Err(_) => {
                if probed_by_us {
                    remove_vdev(&name);
                }
                return Err(Error::NoPort {
                    devargs: devargs.into(),
                });
            }
        };
        Ok(Port {
            id,
            name,
            devargs: devargs.into(),
            probed_by_us,
            queues: 0,
            started: false,
            health: DeviceHealth::new(id),
            watching: false,
            tx_watch: Vec::new(),
        })
    }

    /// Ask DPDK to report link-state changes (where the PMD has the interrupt) and the
    /// device's removal (hot-unplug of a VF, say): both mark [`Port::health`] down at once.
    pub fn watch_events(&mut self) -> Result<()> {
        if self.watching {
            return Ok(());
        }
        let arg = Arc::as_ptr(&self.health) as *mut std::ffi::c_void;
        for (i, ev) in WATCHED.iter().enumerate() {
            // SAFETY: valid port; the callback reads `health`, which outlives the registration
            // (Drop unregisters first).
            let ret = unsafe {
                dpdk_sys::rte_eth_dev_callback_register(self.id.0, *ev, Some(on_event), arg)
            };
            if ret < 0 {
                for e in &WATCHED[..i] {
                    // SAFETY: registered just above with the same arguments.
                    unsafe {
                        dpdk_sys::rte_eth_dev_callback_unregister(
                            self.id.0,
                            *e,
                            Some(on_event),
                            arg,
                        )
                    };
                }
                return Err(Error::from_ret(
                    "rte_eth_dev_callback_register",
                    self.name.clone(),
                    ret,
                ));
            }
        }
        self.watching = true;
        Ok(())
    }

    /// Whether DPDK reported the device removed.
    pub fn removed(&self) -> bool {
        self.health.snapshot().removed
    }

    /// The device's down flag, shared with the tables that name it.
    pub fn health(&self) -> &Arc<DeviceHealth> {
        &self.health
    }

    /// A port over two sets of rings (`net_ring` PMD): rx reads `rx[i]`, tx writes `tx[i]`.
    /// For tests and benchmarks that play the wire themselves.
    pub fn from_rings(name: &str, rx: &[&Ring], tx: &[&Ring]) -> Result<Port> {
        let cname = c_name("port", name, 30)?;
        let rxp: Vec<*mut dpdk_sys::rte_ring> = rx.iter().map(|r| r.as_ptr()).collect();
        let txp: Vec<*mut dpdk_sys::rte_ring> = tx.iter().map(|r| r.as_ptr()).collect();
        // SAFETY: arrays of live rings, which outlive the port (caller keeps them).
        let ret = unsafe {
            dpdk_sys::rte_eth_from_rings(
                cname.as_ptr(),
                rxp.as_ptr(),
                rxp.len() as u32,
                txp.as_ptr(),
                txp.len() as u32,
                dpdk_sys::rte_socket_id(),
            )
        };
        if ret < 0 {
            return Err(Error::from_errno("rte_eth_from_rings", name));
        }
        Ok(Port {
            id: PortId(ret as u16),
            name: name.into(),
            devargs: format!("net_ring:{name}"),
            probed_by_us: false,
            queues: 0,
            started: false,
            health: DeviceHealth::new(PortId(ret as u16)),
            watching: false,
            tx_watch: Vec::new(),
        })
    }

    /// Port id.
    pub fn id(&self) -> PortId {
        self.id
    }
    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The devargs it was opened with.
    pub fn devargs(&self) -> &str {
        &self.devargs
    }
    /// Whether it is started.
    pub fn is_started(&self) -> bool {
        self.started
    }

    fn info(&self) -> Result<dpdk_sys::rte_eth_dev_info> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port, info is a valid out pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(self.id.0, &mut info) };
        check("rte_eth_dev_info_get", || self.name.clone(), ret)?;
        Ok(info)
    }

    /// Configure queues (rx buffers from `pool`), MTU and RSS. The port must be stopped.
    pub fn configure(&mut self, cfg: &PortConfig, pool: &Mempool) -> Result<()> {
        if self.started {
            return Err(Error::Invalid {
                op: "rte_eth_dev_configure",
                why: format!("port {} is started", self.name),
            });
        }
        let info = self.info()?;
        if cfg.queues == 0 || cfg.queues > info.max_rx_queues || cfg.queues > info.max_tx_queues {
            return Err(Error::Invalid {
                op: "rte_eth_dev_configure",
                why: format!(
                    "{} queues requested, device {} supports {} rx / {} tx",
                    cfg.queues, self.name, info.max_rx_queues, info.max_tx_queues
                ),
            });
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        // Link-state interrupts where the PMD has them (net_tap, most VFs; not memif in 22.11,
        // whose configure fails with lsc=1): the callback marks the device down at once.
        // SAFETY: dev_flags points into the device's data, valid while the port exists.
        if !info.dev_flags.is_null() && unsafe { *info.dev_flags } & INTR_LSC != 0 {
            conf.intr_conf.set_lsc(1);
        }
        if cfg.queues > 1 && info.flow_type_rss_offloads != 0 {
            // Spread flows over the VF's queues; queue i maps to the client's queue i.
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads;
        }
        // SAFETY: valid port, conf lives through the call.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_configure(self.id.0, cfg.queues, cfg.queues, &conf) };
        check("rte_eth_dev_configure", || self.name.clone(), ret)?;
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port and out pointers.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id.0, &mut rxd, &mut txd) };
        check(
            "rte_eth_dev_adjust_nb_rx_tx_desc",
            || self.name.clone(),
            ret,
        )?;
        // SAFETY: plain query.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id.0) };
        let socket = if socket < 0 {
            dpdk_sys::SOCKET_ID_ANY
        } else {
            socket
        };
        for q in 0..cfg.queues {
            // SAFETY: valid port/queue; NULL conf means the device defaults; pool outlives the
            // port (the appliance drops ports before pools).
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.id.0,
                    q,
                    rxd,
                    socket as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(
                "rte_eth_rx_queue_setup",
                || format!("{} queue {q}", self.name),
                ret,
            )?;
            // SAFETY: as above.
            let ret = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(self.id.0, q, txd, socket as u32, std::ptr::null())
            };
            check(
                "rte_eth_tx_queue_setup",
                || format!("{} queue {q}", self.name),
                ret,
            )?;
        }
        if let Some(mtu) = cfg.mtu {
            // SAFETY: valid port.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id.0, mtu) };
            // Vdevs without MTU control report ENOTSUP: keep going, the frame size is ours to police.
            if ret < 0 && ret != -libc::ENOTSUP && ret != -libc::EOPNOTSUPP {
                check(
                    "rte_eth_dev_set_mtu",
                    || format!("{} mtu {mtu}", self.name),
                    ret,
                )?;
            }
        }
        if cfg.promiscuous {
            // SAFETY: valid port.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id.0) };
            if ret < 0 && ret != -libc::ENOTSUP {
                check("rte_eth_promiscuous_enable", || self.name.clone(), ret)?;
            }
        }
        self.queues = cfg.queues;
        // New queues: watched from the next start, when ethdev publishes them.
        self.tx_watch.clear();
        Ok(())
    }

    /// Start the port.
    pub fn start(&mut self) -> Result<()> {
        // SAFETY: valid, configured port.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(self.id.0) };
        check("rte_eth_dev_start", || self.name.clone(), ret)?;
        self.started = true;
        if self.tx_watch.is_empty() {
            self.tx_watch = (0..self.queues)
                .map(|q| TxWatch::memif(self.id.0, q).map(Arc::new))
                .collect();
        }
        Ok(())
    }

    /// Stop the port. The caller guarantees no data core polls it any more. Frames waiting in
    /// its rx queues go back to their pool first (a software wire such as net_ring would keep
    /// them).
    pub fn stop(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        self.drain_rx();
        self.started = false;
        // SAFETY: valid port; quiesced by the caller.
        let ret = unsafe { dpdk_sys::rte_eth_dev_stop(self.id.0) };
        check("rte_eth_dev_stop", || self.name.clone(), ret)
    }

    /// Link state without waiting.
    pub fn link(&self) -> Result<Link> {
        let mut l = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port and out pointer.
        let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id.0, &mut l) };
        check("rte_eth_link_get_nowait", || self.name.clone(), ret)?;
        Ok(Link {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
        })
    }

    /// Hardware/PMD counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port and out pointer.
        let ret = unsafe { dpdk_sys::rte_eth_stats_get(self.id.0, &mut s) };
        check("rte_eth_stats_get", || self.name.clone(), ret)?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut a = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port and out pointer.
        let ret = unsafe { dpdk_sys::rte_eth_macaddr_get(self.id.0, &mut a) };
        check("rte_eth_macaddr_get", || self.name.clone(), ret)?;
        Ok(a.addr_bytes)
    }

    /// Program `mac` as the port's address (hot standby: every backing device of a vNIC carries
    /// its MAC before it is needed). Devices that cannot change it return ENOTSUP.
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<()> {
        let mut a = dpdk_sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port and address.
        let ret = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(self.id.0, &mut a) };
        check(
            "rte_eth_dev_default_mac_addr_set",
            || self.name.clone(),
            ret,
        )
    }

    /// Restart a stopped-or-broken port (a memif client redials its server this way).
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.stop();
        self.start()
    }

    /// Receive and free whatever waits in the rx queues (at teardown, after every data core
    /// stopped: a software wire such as net_ring would otherwise keep those mbufs). Returns the
    /// count.
    pub fn drain_rx(&self) -> usize {
        let mut n = 0;
        let mut b = Burst::default();
        for q in 0..self.queues {
            let rxq = RxQueue {
                port: self.id,
                queue: QueueId(q),
            };
            // Bounded: some devices (net_null) never run dry.
            for _ in 0..64 {
                if rxq.rx_burst(&mut b) == 0 {
                    break;
                }
                n += b.consume(0);
            }
        }
        n
    }

    /// Rx queue `q`, if configured.
    pub fn rx_queue(&self, q: u16) -> Option<RxQueue> {
        (q < self.queues).then_some(RxQueue {
            port: self.id,
            queue: QueueId(q),
        })
    }
    /// Tx queue `q`, if configured.
    pub fn tx_queue(&self, q: u16) -> Option<TxQueue> {
        (q < self.queues).then_some(TxQueue {
            port: self.id,
            queue: QueueId(q),
        })
    }
    /// Where tx queue `q`'s consumer shows its progress, if the PMD lets us see it.
    pub fn tx_watch(&self, q: u16) -> Option<Arc<TxWatch>> {
        self.tx_watch.get(q as usize).cloned().flatten()
    }
    /// TSC since which a data core has seen a tx queue's consumer stopped (the earliest; 0:
    /// none has).
    pub fn stalled_since(&self) -> u64 {
        self.tx_watch
            .iter()
            .flatten()
            .map(|w| w.stalled_since())
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0)
    }
    /// Forget the queues' stalls (the device rejoins; no table names it now).
    pub fn reset_stalls(&self) {
        self.tx_watch.iter().flatten().for_each(|w| w.reset());
    }
}

fn remove_vdev(name: &str) {
    if let Ok(c) = c_name("device", name, 63) {
        // SAFETY: valid name; the device is closed.
        unsafe { dpdk_sys::rte_vdev_uninit(c.as_ptr()) };
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if std::mem::take(&mut self.watching) {
            let arg = Arc::as_ptr(&self.health) as *mut std::ffi::c_void;
            for ev in WATCHED {
                // SAFETY: registered in watch_events; unregistering waits for a running
                // callback, after which nothing reads `health` through `arg`.
                unsafe {
                    dpdk_sys::rte_eth_dev_callback_unregister(self.id.0, ev, Some(on_event), arg)
                };
            }
        }
        if let Err(e) = self.stop() {
            tracing::warn!("{e}");
        }
        // SAFETY: stopped port, no data core polls it (the owner quiesced them before dropping).
        unsafe {
            let ret = dpdk_sys::rte_eth_dev_close(self.id.0);
            if ret < 0 {
                tracing::warn!(
                    "{}",
                    Error::from_ret("rte_eth_dev_close", self.name.clone(), ret)
                );
            }
        }
        if self.probed_by_us || self.devargs.starts_with("net_ring:") {
            remove_vdev(&self.name);
        }
    }
}

/// Receive queue handle (copyable, made only by [`Port::rx_queue`]). Valid while its port lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxQueue {
    pub(crate) port: PortId,
    pub(crate) queue: QueueId,
}

/// Transmit queue handle (copyable, made only by [`Port::tx_queue`]). Valid while its port lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxQueue {
    pub(crate) port: PortId,
    pub(crate) queue: QueueId,
}

impl RxQueue {
    /// Port of this queue.
    pub fn port(&self) -> PortId {
        self.port
    }
    /// Receive up to a burst into an empty `burst`. One thread per queue.
    #[inline(always)]
    pub fn rx_burst(&self, burst: &mut Burst) -> usize {
        self.rx_burst_max(burst, BURST)
    }
    /// Receive at most `max` (≤ [`BURST`]) packets into an empty `burst`.
    #[inline(always)]
    pub fn rx_burst_max(&self, burst: &mut Burst, max: usize) -> usize {
        debug_assert!(burst.is_empty());
        let max = max.min(BURST);
        // SAFETY: ptrs has room for BURST ≥ max mbufs, which become ours.
        let n = unsafe { self.rx_into(burst.ptrs.as_mut_ptr(), max as u16) } as usize;
        burst.len = n;
        n
    }

    /// Receive at most `max` packets into `slots` (a burst's array or slots reserved in a ring);
    /// the caller owns what comes back.
    ///
    /// # Safety
    /// `slots` is writable for `max` pointers (a PMD may write any of them, not only the first
    /// `n` it returns), and nothing else uses this queue meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn rx_into(&self, slots: *mut *mut dpdk_sys::rte_mbuf, max: u16) -> u16 {
        // SAFETY: forwarded; the queue is configured and its port started (the table only
        // holds queues of started ports).
        unsafe { eth_rx(self.port.0, self.queue.0, slots, max) }
    }
}

/// `rte_eth_rx_burst` of DPDK 22.11 (a `static inline` in `rte_ethdev.h`), in Rust so the poll
/// loop's calls inline: the device's burst function and queue from `rte_eth_fp_ops` (which
/// ethdev fills at start and points at dummies at stop), then the rx callbacks if any were
/// installed (Debian builds with `RTE_ETHDEV_RXTX_CALLBACKS`). The C shim's call cost ~1 cycle
/// per frame on the closed loop (perf: `vnic_rte_eth_{rx,tx}_burst` 2.7 % of the data core).
///
/// # Safety
/// `port`/`queue` name a configured queue; `pkts` is writable for `n` pointers.
#[inline(always)]
unsafe fn eth_rx(port: u16, queue: u16, pkts: *mut *mut dpdk_sys::rte_mbuf, n: u16) -> u16 {
    // SAFETY: port < RTE_MAX_ETHPORTS (a PortId comes from ethdev); ethdev keeps the entry's
    // queue arrays sized RTE_MAX_QUEUES_PER_PORT for the life of the process.
    unsafe {
        let p = std::ptr::addr_of!(dpdk_sys::rte_eth_fp_ops[port as usize]);
        let qd = *(*p).rxq.data.add(queue as usize);
        let Some(burst) = (*p).rx_pkt_burst else {
            return 0;
        };
        let got = burst(qd, pkts, n);
        // Relaxed, as DPDK loads it: the callback was published with release ordering and its
        // fields depend on the pointer.
        let cb = AtomicPtr::from_ptr((*p).rxq.clbk.add(queue as usize)).load(Ordering::Relaxed);
        if cb.is_null() {
            got
        } else {
            dpdk_sys::rte_eth_call_rx_callbacks(port, queue, pkts, got, n, cb)
        }
    }
}

/// `rte_eth_tx_burst` of DPDK 22.11, as [`eth_rx`]: tx callbacks first, then the device.
///
/// # Safety
/// `port`/`queue` name a configured queue; `pkts[..n]` are valid mbufs, of which the device
/// takes the first it returns.
#[inline(always)]
unsafe fn eth_tx(port: u16, queue: u16, pkts: *mut *mut dpdk_sys::rte_mbuf, n: u16) -> u16 {
    // SAFETY: as in eth_rx.
    unsafe {
        let p = std::ptr::addr_of!(dpdk_sys::rte_eth_fp_ops[port as usize]);
        let qd = *(*p).txq.data.add(queue as usize);
        let cb = AtomicPtr::from_ptr((*p).txq.clbk.add(queue as usize)).load(Ordering::Relaxed);
        let n = if cb.is_null() {
            n
        } else {
            dpdk_sys::rte_eth_call_tx_callbacks(port, queue, pkts, n, cb)
        };
        match (*p).tx_pkt_burst {
            Some(burst) => burst(qd, pkts, n),
            None => 0,
        }
    }
}

impl TxQueue {
    /// Port of this queue.
    pub fn port(&self) -> PortId {
        self.port
    }
    /// Send the burst: the sent prefix now belongs to the device, the unsent tail is freed.
    /// Returns (sent, dropped). One thread per queue.
    #[inline(always)]
    pub fn tx_burst(&self, burst: &mut Burst) -> (usize, usize) {
        let n = burst.len;
        // SAFETY: ptrs[..n] are owned mbufs; the device takes the first `sent`.
        let sent = unsafe { self.tx_from(burst.ptrs.as_mut_ptr(), n as u16) } as usize;
        (sent, burst.consume(sent))
    }

    /// Send `slots[..n]` (a burst's array or entries peeked in a ring): the device takes the
    /// first it returns; the rest stay the caller's.
    ///
    /// # Safety
    /// `slots[..n]` are valid mbufs the caller may hand on; nothing else uses this queue
    /// meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn tx_from(&self, slots: *mut *mut dpdk_sys::rte_mbuf, n: u16) -> u16 {
        // SAFETY: forwarded; the queue is configured (see rx_into).
        unsafe { eth_tx(self.port.0, self.queue.0, slots, n) }
    }
}

/// The port name DPDK reports for a port id (diagnostics).
pub fn port_name(id: PortId) -> Option<String> {
    let mut buf = [0 as std::ffi::c_char; 64];
    // SAFETY: buf is 64 bytes, RTE_ETH_NAME_MAX_LEN.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id.0, buf.as_mut_ptr()) };
    (ret == 0).then(|| {
        // SAFETY: on success buf holds a NUL-terminated name.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    })
}
