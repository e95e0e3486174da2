//! NDR/PDR search (RFC 2544 throughput, the way FD.io CSIT's MLRsearch does it, simplified): one
//! pass narrows both the no-drop rate (loss 0) and the partial-drop rate (loss ≤ `pdr_loss`) by
//! bisection with short trials, then confirms each result with a full-length trial; a failed
//! confirmation lowers the bound and the search goes on.
use serde::Serialize;

/// Search parameters.
#[derive(Debug, Clone, Copy)]
pub struct SearchOpts {
    /// The highest rate to try (frames/s): MRR or the generator's limit.
    pub max_rate: f64,
    /// Stop when the interval is narrower than this share of its upper bound.
    pub precision: f64,
    /// Loss ratio a PDR trial may have (0.005 = 0.5 %).
    pub pdr_loss: f64,
    /// Below this share of `max_rate` a rate counts as 0 (the search gives up going lower).
    pub floor: f64,
    /// Most trials in total.
    pub max_trials: usize,
}

impl Default for SearchOpts {
    fn default() -> Self {
        SearchOpts {
            max_rate: 0.0,
            precision: 0.02,
            pdr_loss: 0.005,
            floor: 0.005,
            max_trials: 24,
        }
    }
}

/// One trial of a search.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchTrial {
    pub rate: f64,
    pub loss_ratio: f64,
    /// A full-length confirmation trial.
    pub confirm: bool,
}

/// What a search found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResult {
    /// Highest confirmed rate with no loss (frames/s); 0 when even the floor lost frames.
    pub ndr: f64,
    /// Highest confirmed rate with loss ≤ `pdr_loss`.
    pub pdr: f64,
    pub trials: Vec<SearchTrial>,
}

#[derive(Debug, Clone, Copy)]
struct Interval {
    lo: f64,
    hi: f64,
    confirmed: bool,
}

impl Interval {
    fn open(&self, o: &SearchOpts) -> bool {
        self.hi > o.floor * o.max_rate && self.hi - self.lo > o.precision * self.hi
    }
}

/// Run the search; `measure(rate, confirm)` runs one trial (short, or full-length when
/// `confirm`) and returns its loss ratio.
pub fn search<E>(
    o: &SearchOpts,
    mut measure: impl FnMut(f64, bool) -> Result<f64, E>,
) -> Result<SearchResult, E> {
    let mut ndr = Interval {
        lo: 0.0,
        hi: o.max_rate,
        confirmed: false,
    };
    let mut pdr = ndr;
    let mut trials: Vec<SearchTrial> = Vec::new();
    let mut first = true;
    // Once a confirmation fails, short trials are known to flatter this device: every trial
    // from then on is full-length.
    let mut long = false;
    while trials.len() < o.max_trials {
        // Narrow PDR first (the wider one), then NDR, then confirm each lower bound.
        let (rate, confirm) = if first {
            (o.max_rate, false)
        } else if pdr.open(o) {
            ((pdr.lo + pdr.hi) / 2.0, long)
        } else if ndr.open(o) {
            ((ndr.lo + ndr.hi) / 2.0, long)
        } else if !pdr.confirmed && pdr.lo > 0.0 {
            (pdr.lo, true)
        } else if !ndr.confirmed && ndr.lo > 0.0 {
            (ndr.lo, true)
        } else {
            break;
        };
        first = false;
        let loss = measure(rate, confirm)?;
        trials.push(SearchTrial {
            rate,
            loss_ratio: loss,
            confirm,
        });
        for (iv, limit) in [(&mut pdr, o.pdr_loss), (&mut ndr, 0.0)] {
            if loss <= limit {
                if rate > iv.lo {
                    iv.lo = rate;
                    iv.confirmed = confirm;
                } else if rate == iv.lo {
                    iv.confirmed |= confirm;
                }
            } else if rate < iv.hi {
                iv.hi = rate;
                if iv.lo >= rate {
                    // A confirmation failed: the bound was luck; search below it.
                    iv.lo = 0.0;
                    iv.confirmed = false;
                    long = true;
                }
            }
        }
        // NDR can never be above PDR.
        ndr.hi = ndr.hi.min(pdr.hi);
        if pdr.lo < ndr.lo {
            pdr.lo = ndr.lo;
        }
    }
    let val = |iv: &Interval| {
        if iv.confirmed {
            iv.lo
        } else {
            0.0
        }
    };
    Ok(SearchResult {
        ndr: val(&ndr),
        pdr: val(&pdr).max(val(&ndr)),
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SearchOpts {
        SearchOpts {
            max_rate: 10e6,
            ..Default::default()
        }
    }

    /// A device that drops nothing up to `ndr`, then a growing share.
    fn dut(ndr: f64, pdr: f64) -> impl FnMut(f64, bool) -> Result<f64, ()> {
        move |r, _| {
            Ok(if r <= ndr {
                0.0
            } else if r <= pdr {
                0.001
            } else {
                0.1
            })
        }
    }

    #[test]
    fn finds_both_rates_within_precision() {
        let r = search(&opts(), dut(4e6, 7e6)).unwrap();
        assert!(r.ndr <= 4e6 && r.ndr >= 4e6 * 0.97, "{r:?}");
        assert!(r.pdr <= 7e6 && r.pdr >= 7e6 * 0.97, "{r:?}");
        assert_eq!(r.trials.iter().filter(|t| t.confirm).count(), 2);
        assert!(r.trials.len() <= 24);
    }

    #[test]
    fn lossless_at_max_is_max() {
        let r = search(&opts(), dut(20e6, 20e6)).unwrap();
        assert_eq!((r.ndr, r.pdr), (10e6, 10e6));
        // one trial at max, then one confirmation that holds for both
        assert_eq!(r.trials.len(), 2);
    }

    #[test]
    fn always_lossy_gives_zero() {
        let r = search(&opts(), |_, _| Ok::<f64, ()>(0.5)).unwrap();
        assert_eq!((r.ndr, r.pdr), (0.0, 0.0));
        assert!(r.trials.iter().all(|t| t.rate >= 10e6 * 0.005 / 2.0));
    }

    #[test]
    fn failed_confirmation_searches_lower() {
        // Short trials pass up to 5 Mpps, full-length ones only up to 3 Mpps.
        let r = search(&opts(), |r, confirm| {
            Ok::<f64, ()>(if r <= if confirm { 3e6 } else { 5e6 } {
                0.0
            } else {
                0.1
            })
        })
        .unwrap();
        assert!(r.ndr <= 3e6 && r.ndr > 2.5e6, "{r:?}");
        assert_eq!(r.ndr, r.pdr);
    }

    #[test]
    fn errors_stop_the_search() {
        let mut n = 0;
        let r = search(&opts(), |_, _| {
            n += 1;
            if n == 3 {
                Err("peer crashed")
            } else {
                Ok(0.1)
            }
        });
        assert_eq!(r, Err("peer crashed"));
    }
}
