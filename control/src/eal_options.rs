//! What the EAL is started with for a validated config, and the limits of this DPDK build that
//! a config must fit. Kept out of `config` so that policy does not import the EAL layer.
use crate::config::{Config, ConfigErrors, Hugepages};
use vnic_dataplane::{EalOptions, Memory};

/// Check the config against this DPDK build: every backing device is one ethdev port.
pub fn check_build_limits(cfg: &Config) -> Result<(), ConfigErrors> {
    let devices: usize = cfg.vnics().iter().map(|v| v.backing.len()).sum();
    // A memif client side is a port too (a vhost-user one is not).
    let memif = cfg
        .vnics()
        .iter()
        .filter(|v| matches!(v.client, crate::config::ClientConfig::Memif { .. }))
        .count();
    if devices + memif > vnic_dataplane::MAX_PORTS as usize {
        return Err(ConfigErrors::one(
            "vnics",
            format!(
                "{devices} backing devices and {memif} memif client ports in all, but this DPDK build supports at most {} ports (RTE_MAX_ETHPORTS)",
                vnic_dataplane::MAX_PORTS
            ),
        ));
    }
    Ok(())
}

/// Map a validated config to EAL options. Pure: whether the host has hugepages is an input.
pub fn eal_options(cfg: &Config, host_has_hugepages: bool) -> Result<EalOptions, ConfigErrors> {
    let e = &cfg.raw().eal;
    let huge = match e.hugepages {
        Hugepages::On if !host_has_hugepages => {
            return Err(ConfigErrors::one(
                "eal.hugepages",
                "\"on\" but the host has no free hugepages on a mounted hugetlbfs",
            ))
        }
        Hugepages::On => true,
        Hugepages::Off => false,
        Hugepages::Auto => host_has_hugepages,
    };
    let memory = match (huge, &e.file_prefix) {
        (true, Some(p)) => Memory::HugeShared {
            file_prefix: p.clone(),
        },
        (true, None) => Memory::HugeInMemory,
        (false, _) => Memory::NoHuge,
    };
    let pci_allow = cfg
        .vnics()
        .iter()
        .flat_map(|v| v.backing.iter())
        .filter(|b| crate::config::is_pci_address(&b.devargs))
        .map(|b| b.devargs.clone())
        .collect();
    Ok(EalOptions {
        program: "vnicd".into(),
        cores: e.cores.clone(),
        main_core: e.main_core,
        memory_mb: e.memory_mb,
        memory,
        pci_allow,
        log_level: e.log_level,
        extra: e.extra_args.clone(),
    })
}
