//! Building a vNIC's DPDK resources from its config: mempool, backing-device ports (opened,
//! configured, MAC programmed, started), announce ring.
use super::{Backing, BackingState, LinkState, Vnic, POOL_CACHE, VF_DESC};
use crate::appliance::StartError;
use crate::arbiter::Policy;
use crate::config::{self, BackingConfig, MacAddr};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_dataplane::{mempool, Mempool, Port, PortConfig, Ring, VnicSlot, VnicStats};

pub(crate) fn new_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Fallback: std's per-process random hash keys plus the clock.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        b[..8].copy_from_slice(&h.finish().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn pool_size(v: &config::VnicConfig) -> u32 {
    if let Some(n) = v.mbufs {
        return n;
    }
    let per_dev = v.queues * (VF_DESC as u32 * 2);
    let need =
        v.backing.len() as u32 * per_dev + v.queues * 2 * v.ring_depth + 4 * POOL_CACHE + 1024;
    // 2^n - 1 is the optimal size for the ring under a mempool.
    need.next_power_of_two().max(2048) - 1
}

pub(crate) fn data_room(mtu: u32) -> u16 {
    // Frame = MTU + Ethernet header + VLAN + FCS; keep the standard 2048 minimum.
    let frame = (mtu + 14 + 4 + 4).max(2048);
    (frame + 128).min(u16::MAX as u32) as u16
}

/// Open, configure and start one backing device for a vNIC (its mempool, queues, MAC). A device
/// that cannot be probed or configured comes back `failed` without a port; one that cannot start
/// yet (a memif client whose server is not up) keeps its port and is restarted by health checks.
pub(crate) fn build_backing(
    vnic: &str,
    b: &BackingConfig,
    port_cfg: &PortConfig,
    pool: &Mempool,
    mac: MacAddr,
) -> Backing {
    let opened = Port::open(&b.devargs).and_then(|mut p| {
        p.configure(port_cfg, pool)?;
        // Hot standby: every device carries the vNIC's MAC before it is needed. Many VFs and
        // vdevs refuse (ENOTSUP); then the switch re-points only.
        if b.program_mac {
            if let Err(e) = p.set_mac(mac.0) {
                tracing::debug!(backing = %b.name, "MAC not programmed: {e}");
            }
        }
        if let Err(e) = p.watch_events() {
            tracing::debug!(backing = %b.name, "no removal events: {e}");
        }
        Ok(p)
    });
    let now = Instant::now();
    let mut bk = Backing {
        cfg: b.clone(),
        port: None,
        state: BackingState::Standby,
        link_up: false,
        healthy_since: None,
        last_failure: None,
        bring_up_error: None,
        next_redial: now,
        ever_up: false,
        redials: 0,
        release: false,
        failed_at: None,
        tx_failure: false,
        tx_stalls: 0,
    };
    let failed = |bk: &mut Backing, err: vnic_dataplane::Error| {
        let e = err.to_string();
        bk.bring_up_error = Some(err);
        tracing::error!(vnic, backing = %b.name, "backing device failed: {e}");
        bk.state = BackingState::Failed(e.clone());
        bk.last_failure = Some(e);
    };
    match opened {
        Err(e) => failed(&mut bk, e),
        Ok(mut p) => {
            match p.start() {
                Ok(()) => {
                    bk.link_up = p.link().is_ok_and(|l| l.up);
                    bk.healthy_since = bk.link_up.then_some(now);
                    bk.ever_up = bk.link_up;
                }
                Err(e) => failed(&mut bk, e),
            }
            bk.port = Some(p);
        }
    }
    bk
}

pub(crate) fn port_config(v: &config::VnicConfig) -> PortConfig {
    PortConfig {
        queues: v.queues as u16,
        rx_desc: VF_DESC,
        tx_desc: VF_DESC,
        mtu: Some(v.mtu as u16),
        promiscuous: true,
    }
}

pub(crate) fn policy(v: &config::VnicConfig) -> Policy {
    Policy {
        auto_priority_failover: v.auto_priority_failover,
        hold_down: Duration::from_millis(v.hold_down_ms as u64),
        flap_limit: v.flap_limit,
        flap_window: Duration::from_millis(v.flap_window_ms as u64),
        tx_stall: Duration::from_millis(v.tx_stall_ms as u64),
        tx_refuse_us: v.tx_refuse_us,
        announce_rounds: v.announce_rounds,
        announce_interval: Duration::from_millis(v.announce_interval_ms as u64),
    }
}

pub(crate) fn ipv4s(v: &config::VnicConfig) -> Vec<[u8; 4]> {
    v.ipv4
        .iter()
        .filter_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        .map(|ip| ip.octets())
        .collect()
}

/// Build a vNIC: mempool, backing devices, announce ring. `incarnation` keeps DPDK object names
/// unique when a vNIC is recreated while its old objects may still exist.
pub(crate) fn build_vnic(
    v: &config::VnicConfig,
    mac: MacAddr,
    core_idx: usize,
    slot: VnicSlot,
    incarnation: u64,
) -> Result<Vnic, StartError> {
    let socket = vnic_dataplane::socket_id();
    let err = |what: &'static str| {
        let vnic = v.name.clone();
        move |err| StartError::Vnic { vnic, what, err }
    };
    let suffix = if incarnation == 0 {
        String::new()
    } else {
        format!(".{}", incarnation % 100_000)
    };
    let pool = Arc::new(
        Mempool::new(
            &format!("mp_{}{suffix}", v.name),
            pool_size(v),
            POOL_CACHE,
            data_room(v.mtu).max(mempool::DEFAULT_DATA_ROOM),
            socket,
        )
        .map_err(err("mempool"))?,
    );
    let port_cfg = port_config(v);
    let backing: Vec<Backing> = v
        .backing
        .iter()
        .map(|b| build_backing(&v.name, b, &port_cfg, &pool, mac))
        .collect();
    // Best priority wins (config order breaks ties) among devices that started; a memif link may
    // still be connecting, so "up" is not required yet: health checks follow.
    let active = backing
        .iter()
        .enumerate()
        .filter(|(_, b)| b.port.is_some() && b.state == BackingState::Standby)
        .min_by_key(|(k, b)| (b.cfg.priority, *k))
        .map(|(k, _)| k);
    let announce_ring =
        Ring::new(&format!("{}.ann{suffix}", v.name), 64, socket).map_err(err("announce ring"))?;
    let mut vn = Vnic {
        name: v.name.clone(),
        mac,
        max_queues: v.queues as u16,
        max_depth: v.ring_depth,
        mtu: v.mtu,
        allow_spoofing: v.allow_spoofing,
        allowed_uids: v.allowed_uids.clone(),
        allowed_gids: v.allowed_gids.clone(),
        core_idx,
        slot,
        active,
        backing,
        pool,
        client: v.client.clone(),
        endpoint: super::Endpoint::closed(&v.client),
        client_refused: None,
        attach: None,
        epoch: 0,
        token: None,
        policy: policy(v),
        failovers_by_reason: Default::default(),
        last_switch: None,
        failbacks: VecDeque::new(),
        flap_suppressed: false,
        announce_ring: Arc::new(announce_ring),
        announce_left: 0,
        next_announce: Instant::now(),
        announce_until: None,
        ipv4: ipv4s(v),
        last_check: Instant::now(),
        stats_base: VnicStats::default(),
        parked: false,
        told_link: LinkState {
            up: false,
            active_backing: None,
        },
        moving: super::Moving::No,
        carried: Default::default(),
    };
    if let Some(a) = active {
        vn.backing[a].state = BackingState::Active;
    }
    vn.told_link = vn.link();
    Ok(vn)
}
