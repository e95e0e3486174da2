//! DPDK telemetry commands answered by Rust closures: `rte_telemetry_register_cmd` with one C
//! callback that finds the closure by command name. Callbacks run on DPDK's telemetry thread,
//! so a closure must only read what another thread published (a snapshot), never the model.
//!
//! Answers are a dictionary whose values are scalars or dictionaries of scalars: DPDK 22.11
//! nests containers one level deep, and a dictionary holds at most 256 entries (more are left
//! out, and `truncated` says how many). Keys keep only the characters DPDK allows in them.
use crate::error::{c_name, check, Result};
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Mutex;

/// A value in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelValue {
    Str(String),
    U64(u64),
    /// A dictionary of scalars (nested dictionaries inside it are left out).
    Dict(Vec<(String, TelValue)>),
}

/// An answer: the top-level dictionary, or an error text (sent as the command's string value).
pub type TelAnswer = std::result::Result<Vec<(String, TelValue)>, String>;

/// A command's handler: gets the parameters after the comma (`/vnicd/vnic,NAME`), if any.
pub type TelHandler = Box<dyn Fn(Option<&str>) -> TelAnswer + Send + Sync>;

/// Most entries DPDK keeps in a dictionary.
const MAX_DICT: usize = dpdk_sys::RTE_TEL_MAX_DICT_ENTRIES as usize;
/// Longest string value (terminator included).
const MAX_STR: usize = dpdk_sys::RTE_TEL_MAX_STRING_LEN as usize;

static HANDLERS: Mutex<Vec<(String, TelHandler)>> = Mutex::new(Vec::new());

/// Answer `cmd` (e.g. `/vnicd/vnics`) with `h`. Registering a command again replaces its
/// handler (DPDK keeps the first registration: the callback finds the closure by name).
pub fn register(cmd: &str, help: &str, h: TelHandler) -> Result<()> {
    let c = c_name("telemetry command", cmd, 55)?;
    let help = CString::new(help.replace('\0', " ")).unwrap_or_default();
    let Ok(mut hs) = HANDLERS.lock() else {
        return Err(crate::error::Error::Invalid {
            op: "rte_telemetry_register_cmd",
            why: "the handler table is poisoned".into(),
        });
    };
    if let Some(e) = hs.iter_mut().find(|(n, _)| n == cmd) {
        e.1 = h;
        return Ok(());
    }
    // SAFETY: both strings are NUL-terminated and live for the call (DPDK copies them into its
    // own table); `callback` is a plain extern "C" function valid for the life of the process.
    let rc =
        unsafe { dpdk_sys::rte_telemetry_register_cmd(c.as_ptr(), Some(callback), help.as_ptr()) };
    check("rte_telemetry_register_cmd", || cmd.to_string(), rc)?;
    hs.push((cmd.to_string(), h));
    Ok(())
}

extern "C" fn callback(
    cmd: *const c_char,
    params: *const c_char,
    d: *mut dpdk_sys::rte_tel_data,
) -> c_int {
    if cmd.is_null() || d.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: the telemetry thread passes NUL-terminated strings that live for this call.
    let cmd = unsafe { CStr::from_ptr(cmd) }.to_string_lossy();
    let params = if params.is_null() {
        None
    } else {
        // SAFETY: as above.
        let p = unsafe { CStr::from_ptr(params) };
        Some(p.to_string_lossy().to_string()).filter(|p| !p.is_empty())
    };
    let answer = match HANDLERS.lock() {
        Ok(hs) => match hs.iter().find(|(n, _)| *n == cmd) {
            Some((_, h)) => h(params.as_deref()),
            None => Err(format!("{cmd}: no handler")),
        },
        Err(_) => Err("the handler table is poisoned".into()),
    };
    // SAFETY: `d` is the telemetry library's data object for this reply, valid for this call.
    unsafe { write(d, answer) }
}

/// A dictionary key as DPDK 22.11 takes it: letters, digits, `_` and `/` only (it refuses the
/// entry otherwise), so anything else becomes `_` (`vnic0-a` → `vnic0_a`).
pub fn key(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '/' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A C string of at most `MAX_STR - 1` bytes, NUL bytes replaced.
fn cstr(s: &str) -> CString {
    let mut s = s.replace('\0', " ");
    if s.len() >= MAX_STR {
        let mut cut = MAX_STR - 1;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    CString::new(s).unwrap_or_default()
}

/// Fill `d` with the answer.
///
/// # Safety
/// `d` must be a valid `rte_tel_data` for the current reply.
unsafe fn write(d: *mut dpdk_sys::rte_tel_data, answer: TelAnswer) -> c_int {
    let entries = match answer {
        Ok(e) => e,
        Err(msg) => {
            let m = cstr(&msg);
            // SAFETY: `d` is valid (caller); `m` is NUL-terminated.
            return unsafe { dpdk_sys::rte_tel_data_string(d, m.as_ptr()) };
        }
    };
    // SAFETY: `d` is valid (caller).
    unsafe { dpdk_sys::rte_tel_data_start_dict(d) };
    let left_out = entries.len().saturating_sub(MAX_DICT - 1);
    let keep = if left_out > 0 {
        MAX_DICT - 1
    } else {
        entries.len()
    };
    for (k, v) in entries.into_iter().take(keep) {
        let k = cstr(&key(&k));
        match v {
            // SAFETY: `d` is a started dict; `k` lives for the call.
            TelValue::Dict(inner) => unsafe {
                let c = dpdk_sys::rte_tel_data_alloc();
                if c.is_null() {
                    continue;
                }
                dpdk_sys::rte_tel_data_start_dict(c);
                for (ik, iv) in inner.into_iter().take(MAX_DICT) {
                    scalar(c, &cstr(&key(&ik)), &iv);
                }
                // keep = 0: the library frees the container with the reply.
                if dpdk_sys::rte_tel_data_add_dict_container(d, k.as_ptr(), c, 0) < 0 {
                    dpdk_sys::rte_tel_data_free(c);
                }
            },
            // SAFETY: as above.
            v => unsafe { scalar(d, &k, &v) },
        }
    }
    if left_out > 0 {
        let k = cstr("truncated");
        // SAFETY: `d` is a started dict with room for this one entry (kept back above).
        unsafe { dpdk_sys::rte_tel_data_add_dict_u64(d, k.as_ptr(), left_out as u64) };
    }
    0
}

/// Add a scalar to a started dict (a nested dict is left out: one level only).
///
/// # Safety
/// `d` must be a valid, started `rte_tel_data` dict.
unsafe fn scalar(d: *mut dpdk_sys::rte_tel_data, k: &CStr, v: &TelValue) {
    match v {
        TelValue::Str(s) => {
            let s = cstr(s);
            // SAFETY: `d` valid (caller), both strings NUL-terminated.
            unsafe { dpdk_sys::rte_tel_data_add_dict_string(d, k.as_ptr(), s.as_ptr()) };
        }
        // SAFETY: `d` valid (caller).
        TelValue::U64(x) => unsafe {
            dpdk_sys::rte_tel_data_add_dict_u64(d, k.as_ptr(), *x);
        },
        TelValue::Dict(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_only_what_dpdk_allows_and_strings_fit() {
        assert_eq!(key("vnic0-a"), "vnic0_a");
        assert_eq!(key("/vnicd/x.y z"), "/vnicd/x_y_z");
        let long = "é".repeat(100);
        let c = cstr(&long);
        assert!(c.as_bytes().len() < MAX_STR);
        assert!(
            std::str::from_utf8(c.as_bytes()).is_ok(),
            "cut on a char boundary"
        );
        assert_eq!(cstr("a\0b").as_bytes(), b"a b");
    }
}
