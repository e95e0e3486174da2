//! Config reloads: a pure plan (the diff between the running and the new config) and its
//! application in two phases.
mod apply;
mod plan;

pub(crate) use apply::unopened;
pub use apply::{PreparedReload, ReloadError, StepError};
pub use plan::*;
