//! vhost-user client sides through DPDK's vhost library (`rte_vhost`): vnicd is the backend, QEMU
//! or `net_virtio_user` the frontend. A vhost client costs no ethdev port.
//!
//! The library calls us back on its own thread. The callbacks never touch the appliance: they
//! post [`VhostEvent`]s to one queue that the control thread drains. The one thing a callback must
//! do itself is `destroy_device`: once it returns, the library unmaps guest memory, so no data core
//! may still be inside an enqueue or dequeue on that device. Each device has a [`VidGate`] that the
//! data core checks before every vhost call; the callback closes the gate and waits until every
//! running data core has finished a pass of its loop. It waits on the data cores only (they never
//! block), never on the control thread, which may itself be the caller (unregistering a socket
//! destroys its device on the calling thread).
use crate::error::{Error, Result};
use crossbeam::channel::{Receiver, Sender};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// virtio-net feature bits vnicd turns off: checksum and segmentation offloads. The backing
/// devices are plain SR-IOV VFs here and vnicd moves frames as they are; a guest that sent
/// 64 KiB TSO frames would have them dropped by the VF.
const OFFLOAD_FEATURES: u64 = (1 << 0)   // VIRTIO_NET_F_CSUM
    | (1 << 1)   // GUEST_CSUM
    | (1 << 7)   // GUEST_TSO4
    | (1 << 8)   // GUEST_TSO6
    | (1 << 9)   // GUEST_ECN
    | (1 << 10)  // GUEST_UFO
    | (1 << 11)  // HOST_TSO4
    | (1 << 12)  // HOST_TSO6
    | (1 << 13)  // HOST_ECN
    | (1 << 14); // HOST_UFO

/// What the vhost thread saw. `socket` is the path the device came in on.
#[derive(Debug, Clone)]
pub enum VhostEvent {
    /// A frontend finished setting the device up: it may be served now.
    Ready {
        socket: String,
        vid: i32,
        /// Queue pairs the frontend set up.
        pairs: u16,
        /// Negotiated virtio features.
        features: u64,
        /// The library accepted turning the frontend's kicks off on every vring (NO_NOTIFY).
        kicks_off: bool,
        gate: Arc<VidGate>,
    },
    /// A frontend set up more queue pairs than the vNIC has: refused (the library keeps the
    /// connection but never starts the device).
    Refused {
        socket: String,
        vid: i32,
        pairs: u16,
        max_pairs: u16,
    },
    /// A vring was enabled or disabled (virtio multi-queue).
    VringState {
        socket: String,
        vid: i32,
        vring: u16,
        enabled: bool,
    },
    /// The device is gone (frontend closed, guest reset, socket unregistered). No data core
    /// touches it any more: its gate was closed and the cores passed.
    Gone { socket: String, vid: i32 },
}

/// A device's admission to the data path: open while the library keeps the device, closed (for
/// good) in `destroy_device`.
#[derive(Debug)]
pub struct VidGate {
    open: AtomicBool,
    /// Enabled vrings (bit per vring index; the first 64).
    enabled: AtomicU64,
}

impl VidGate {
    fn new() -> Self {
        VidGate {
            open: AtomicBool::new(true),
            enabled: AtomicU64::new(0),
        }
    }
    /// Whether the data path may use the device.
    #[inline(always)]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
    /// Vrings the frontend enabled, a bit per index (0 when it never said: then all are).
    pub fn enabled_vrings(&self) -> u64 {
        self.enabled.load(Ordering::Acquire)
    }
}

/// A socket's registration: which vNIC, how many queue pairs it may have.
struct SocketInfo {
    max_pairs: u16,
}

#[derive(Default)]
struct Registry {
    sockets: HashMap<String, SocketInfo>,
    gates: HashMap<i32, Arc<VidGate>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn channel() -> &'static (Sender<VhostEvent>, Receiver<VhostEvent>) {
    static C: OnceLock<(Sender<VhostEvent>, Receiver<VhostEvent>)> = OnceLock::new();
    C.get_or_init(crossbeam::channel::unbounded)
}

/// The queue of vhost events, for the control thread to drain.
pub fn events() -> Receiver<VhostEvent> {
    channel().1.clone()
}

fn post(e: VhostEvent) {
    // The receiver is a static: sending cannot fail while the process lives.
    let _ = channel().0.send(e);
}

/// The loop-pass counters of the running data cores, for `destroy_device` to wait on.
fn cores() -> &'static Mutex<Vec<Weak<AtomicU64>>> {
    static C: OnceLock<Mutex<Vec<Weak<AtomicU64>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Vec::new()))
}

/// Called by a data core at launch: `passes` grows by one at the end of every loop pass and is
/// set to `u64::MAX` when the loop exits.
pub(crate) fn register_core(passes: &Arc<AtomicU64>) {
    if let Ok(mut c) = cores().lock() {
        c.retain(|w| w.strong_count() > 0);
        c.push(Arc::downgrade(passes));
    }
}

/// Longest `destroy_device` waits for a data core to finish its pass (a core stalls only if it
/// was stopped without saying so; then it no longer runs the device either).
const PASS_WAIT: Duration = Duration::from_secs(2);

/// Wait until every running data core has completed a loop pass begun after now.
fn wait_cores_passed() {
    let list: Vec<Arc<AtomicU64>> = match cores().lock() {
        Ok(c) => c.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => return,
    };
    std::sync::atomic::fence(Ordering::SeqCst);
    let start: Vec<u64> = list.iter().map(|p| p.load(Ordering::Acquire)).collect();
    let deadline = Instant::now() + PASS_WAIT;
    for (p, s) in list.iter().zip(start) {
        // A pass that was under way when the gate closed ends at s + 1; the one after that began
        // with the gate closed.
        while s != u64::MAX && p.load(Ordering::Acquire) < s.saturating_add(2) {
            if Instant::now() > deadline {
                tracing::error!("a data core did not finish its pass within {PASS_WAIT:?}");
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

fn ifname(vid: c_int) -> String {
    let mut buf = [0 as c_char; 4096];
    // SAFETY: buf is writable for its length; the library NUL-terminates what it writes.
    let ret = unsafe { dpdk_sys::rte_vhost_get_ifname(vid, buf.as_mut_ptr(), buf.len()) };
    if ret != 0 {
        return String::new();
    }
    // SAFETY: NUL-terminated by rte_vhost_get_ifname on success.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn gate_of(reg: &mut Registry, vid: c_int) -> Arc<VidGate> {
    reg.gates
        .entry(vid)
        .or_insert_with(|| Arc::new(VidGate::new()))
        .clone()
}

extern "C" fn new_device(vid: c_int) -> c_int {
    let socket = ifname(vid);
    // SAFETY: plain queries on a device the library is starting.
    let vrings = unsafe { dpdk_sys::rte_vhost_get_vring_num(vid) };
    let mut features = 0u64;
    // SAFETY: out pointer valid.
    unsafe { dpdk_sys::rte_vhost_get_negotiated_features(vid, &mut features) };
    let pairs = vrings / 2;
    let Ok(mut reg) = registry().lock() else {
        return -1;
    };
    let Some(max_pairs) = reg.sockets.get(&socket).map(|s| s.max_pairs) else {
        tracing::error!(socket, vid, "vhost device on a socket vnicd does not serve");
        return -1;
    };
    if pairs > max_pairs || pairs == 0 {
        tracing::error!(
            socket,
            vid,
            "vhost frontend refused: it set up {pairs} queue pairs, the vNIC has {max_pairs}"
        );
        drop(reg);
        post(VhostEvent::Refused {
            socket,
            vid,
            pairs,
            max_pairs,
        });
        return -1;
    }
    // A polling backend tells the frontend not to kick it after every burst it posts (the used
    // ring's NO_NOTIFY flag), as DPDK's net_vhost and OVS do: a kick costs a virtio-user
    // frontend a syscall and a guest a VM exit, and nothing here waits for one. The library
    // keeps the setting for vrings that become ready later.
    let mut kicks_off = true;
    for q in 0..vrings {
        // SAFETY: a plain request on a device the library is starting; q < its vring count.
        if unsafe { dpdk_sys::rte_vhost_enable_guest_notification(vid, q, 0) } != 0 {
            tracing::warn!(
                socket,
                vid,
                vring = q,
                "the frontend's kicks stay on for this vring"
            );
            kicks_off = false;
        }
    }
    let gate = gate_of(&mut reg, vid);
    gate.open.store(true, Ordering::Release);
    drop(reg);
    tracing::info!(socket, vid, pairs, kicks_off, "vhost device ready");
    post(VhostEvent::Ready {
        socket,
        vid,
        pairs,
        features,
        kicks_off,
        gate,
    });
    0
}

extern "C" fn destroy_device(vid: c_int) {
    let socket = ifname(vid);
    let gate = registry()
        .lock()
        .ok()
        .and_then(|mut r| r.gates.remove(&vid));
    if let Some(g) = gate {
        g.open.store(false, Ordering::SeqCst);
        wait_cores_passed();
    }
    tracing::info!(socket, vid, "vhost device gone");
    post(VhostEvent::Gone { socket, vid });
}

extern "C" fn vring_state_changed(vid: c_int, vring: u16, enable: c_int) -> c_int {
    let socket = ifname(vid);
    if let Ok(mut reg) = registry().lock() {
        let g = gate_of(&mut reg, vid);
        if vring < 64 {
            if enable != 0 {
                g.enabled.fetch_or(1 << vring, Ordering::AcqRel);
            } else {
                g.enabled.fetch_and(!(1 << vring), Ordering::AcqRel);
            }
        }
    }
    post(VhostEvent::VringState {
        socket,
        vid,
        vring,
        enabled: enable != 0,
    });
    0
}

/// The callback table handed to the library (it keeps the pointer).
struct Ops(dpdk_sys::rte_vhost_device_ops);
// SAFETY: read-only after initialisation; the only pointer field (`reserved`) is null.
unsafe impl Sync for Ops {}

static OPS: Ops = Ops(dpdk_sys::rte_vhost_device_ops {
    new_device: Some(new_device),
    destroy_device: Some(destroy_device),
    vring_state_changed: Some(vring_state_changed),
    features_changed: None,
    new_connection: None,
    destroy_connection: None,
    guest_notified: None,
    reserved: [std::ptr::null_mut(); 1],
});

/// Who dials whom on a vhost-user socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// vnicd listens; the frontend (QEMU `server=off`, virtio-user) connects.
    Server,
    /// vnicd dials the frontend's socket (QEMU `server=on`) and re-dials when it comes back.
    Client,
}

/// A registered vhost-user socket. Dropping it unregisters the socket; a device on it is
/// destroyed first (on this thread, through the same gate).
#[derive(Debug)]
pub struct VhostSocket {
    path: CString,
    mode: VhostMode,
}

impl VhostSocket {
    /// Register `path` as a vhost-user backend for up to `max_pairs` queue pairs and start it.
    /// Migration stays possible: the dirty-page log (`LOG_SHMFD`) and `RARP` protocol features are
    /// left on, and the async (DMA) path, which does not log, is not used.
    pub fn start(path: &str, mode: VhostMode, max_pairs: u16) -> Result<VhostSocket> {
        let what = || path.to_string();
        let c = CString::new(path).map_err(|_| Error::Invalid {
            op: "rte_vhost_driver_register",
            why: format!("socket path {path:?} contains a NUL byte"),
        })?;
        let flags = match mode {
            VhostMode::Server => 0,
            VhostMode::Client => dpdk_sys::RTE_VHOST_USER_CLIENT as u64,
        };
        {
            let mut reg = registry().lock().map_err(|_| Error::Invalid {
                op: "vhost registry",
                why: "poisoned".into(),
            })?;
            if reg.sockets.contains_key(path) {
                return Err(Error::Invalid {
                    op: "rte_vhost_driver_register",
                    why: format!("{path} is already registered"),
                });
            }
            reg.sockets
                .insert(path.to_string(), SocketInfo { max_pairs });
        }
        let undo = |e: Error| {
            if let Ok(mut r) = registry().lock() {
                r.sockets.remove(path);
            }
            e
        };
        // SAFETY: c is a valid C string; the library copies it.
        let ret = unsafe { dpdk_sys::rte_vhost_driver_register(c.as_ptr(), flags) };
        if ret != 0 {
            return Err(undo(Error::from_ret(
                "rte_vhost_driver_register",
                what(),
                -libc::EINVAL,
            )));
        }
        let s = VhostSocket { path: c, mode };
        // From here on, dropping `s` unregisters.
        // SAFETY: registered path; OPS is a static that outlives the registration.
        let ret = unsafe {
            dpdk_sys::rte_vhost_driver_disable_features(s.path.as_ptr(), OFFLOAD_FEATURES)
        };
        if ret != 0 {
            return Err(Error::from_ret(
                "rte_vhost_driver_disable_features",
                what(),
                -libc::EINVAL,
            ));
        }
        // SAFETY: as above.
        let ret = unsafe { dpdk_sys::rte_vhost_driver_callback_register(s.path.as_ptr(), &OPS.0) };
        if ret != 0 {
            return Err(Error::from_ret(
                "rte_vhost_driver_callback_register",
                what(),
                -libc::EINVAL,
            ));
        }
        // SAFETY: registered path with callbacks; starts listening (server) or dialling (client).
        let ret = unsafe { dpdk_sys::rte_vhost_driver_start(s.path.as_ptr()) };
        if ret != 0 {
            return Err(Error::Invalid {
                op: "rte_vhost_driver_start",
                why: format!(
                    "cannot {} {path} (see the vhost log above)",
                    match mode {
                        VhostMode::Server => "listen on",
                        VhostMode::Client => "dial",
                    }
                ),
            });
        }
        Ok(s)
    }

    /// The socket path.
    pub fn path(&self) -> &str {
        self.path.to_str().unwrap_or("")
    }
    /// Who dials.
    pub fn mode(&self) -> VhostMode {
        self.mode
    }
}

impl Drop for VhostSocket {
    fn drop(&mut self) {
        // SAFETY: registered path. A device still on it is destroyed on this thread first (our
        // destroy_device closes its gate and waits for the data cores, never for this thread).
        unsafe { dpdk_sys::rte_vhost_driver_unregister(self.path.as_ptr()) };
        if let Ok(mut r) = registry().lock() {
            if let Ok(p) = self.path.to_str() {
                r.sockets.remove(p);
            }
        }
        if self.mode == VhostMode::Server {
            // The library leaves the listening socket's file behind.
            let _ = std::fs::remove_file(self.path());
        }
    }
}

/// One vNIC queue's vhost side: enqueue into the guest's rx vring, dequeue from its tx vring.
#[derive(Debug, Clone)]
pub struct VhostQueue {
    pub(crate) vid: i32,
    /// Guest rx vring (frames to the guest).
    pub(crate) to_guest: u16,
    /// Guest tx vring (frames from the guest), when this entry dequeues at all (a vNIC queue
    /// beyond the pairs the guest enabled only delivers).
    pub(crate) from_guest: Option<u16>,
    pub(crate) pool: *mut dpdk_sys::rte_mempool,
    _pool: Arc<crate::Mempool>,
    pub(crate) gate: Arc<VidGate>,
}

impl VhostQueue {
    /// Frames to the guest go to queue pair `to_pair`; frames from the guest are taken from
    /// `from_pair`. Dequeued frames are copied into mbufs of `pool`.
    pub fn new(
        vid: i32,
        gate: Arc<VidGate>,
        to_pair: u16,
        from_pair: Option<u16>,
        pool: Arc<crate::Mempool>,
    ) -> Self {
        VhostQueue {
            vid,
            to_guest: to_pair * 2,
            from_guest: from_pair.map(|p| p * 2 + 1),
            pool: pool.as_ptr(),
            _pool: pool,
            gate,
        }
    }
    /// The device id.
    pub fn vid(&self) -> i32 {
        self.vid
    }
}

/// The data cores' queue of work on vhost devices is the vid; nothing else to free.
// SAFETY: the raw pool pointer is kept alive by the Arc beside it; mempool get/put are
// thread-safe; vhost calls on one vring come from one data core only.
unsafe impl Send for VhostQueue {}
// SAFETY: as above; the table is read-only once published.
unsafe impl Sync for VhostQueue {}
