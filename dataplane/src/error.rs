//! Typed errors at the DPDK edge: every failing call is named, with its errno decoded by
//! `rte_strerror` (which also knows DPDK's own `E_RTE_*` codes).
use std::ffi::CStr;

/// An error from the DPDK layer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A DPDK call failed; `errno` is the positive errno (from the return value or `rte_errno`).
    #[error("{op}({what}): {msg} (errno {errno})")]
    Dpdk {
        op: &'static str,
        what: String,
        errno: i32,
        msg: String,
    },
    /// The EAL was already initialised in this process (DPDK allows one init per process).
    #[error("the DPDK EAL is already initialised in this process")]
    EalAlreadyInitialised,
    /// A name handed to DPDK contains a NUL byte or is too long.
    #[error("invalid {kind} name {name:?}: {why}")]
    BadName {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    /// An argument is out of the range DPDK or vnicd accepts.
    #[error("invalid argument to {op}: {why}")]
    Invalid { op: &'static str, why: String },
    /// A device came up but no ethdev port appeared for it.
    #[error("device {devargs:?} was probed but has no ethdev port")]
    NoPort { devargs: String },
    /// A wait for the data core(s) ran past its deadline.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: &'static str, ms: u64 },
}

/// Result alias for the DPDK layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Text of a DPDK or libc errno.
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe {
        let p = dpdk_sys::rte_strerror(errno);
        if p.is_null() {
            return format!("errno {errno}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int through the shim.
    unsafe { dpdk_sys::vnic_rte_errno() }
}

impl Error {
    /// Error for a call that returned a negative errno (`-EINVAL`, ...).
    pub(crate) fn from_ret(op: &'static str, what: impl Into<String>, ret: i32) -> Self {
        let errno = ret.abs();
        Error::Dpdk {
            op,
            what: what.into(),
            errno,
            msg: strerror(errno),
        }
    }
    /// Error for a call that signals failure by NULL/-1 and sets `rte_errno`.
    pub(crate) fn from_errno(op: &'static str, what: impl Into<String>) -> Self {
        let errno = rte_errno();
        Error::Dpdk {
            op,
            what: what.into(),
            errno,
            msg: strerror(errno),
        }
    }
    /// The errno of a `Dpdk` error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Dpdk { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Turn a DPDK return code (0 ok, negative errno) into a `Result`.
pub(crate) fn check(op: &'static str, what: impl FnOnce() -> String, ret: i32) -> Result<()> {
    if ret < 0 {
        Err(Error::from_ret(op, what(), ret))
    } else {
        Ok(())
    }
}

/// Build a C string for a DPDK object name (NUL-free, DPDK names are at most 31 bytes + NUL).
pub(crate) fn c_name(kind: &'static str, name: &str, max: usize) -> Result<std::ffi::CString> {
    if name.is_empty() {
        return Err(Error::BadName {
            kind,
            name: name.into(),
            why: "empty",
        });
    }
    if name.len() > max {
        return Err(Error::BadName {
            kind,
            name: name.into(),
            why: "too long for DPDK",
        });
    }
    std::ffi::CString::new(name).map_err(|_| Error::BadName {
        kind,
        name: name.into(),
        why: "contains a NUL byte",
    })
}
