//! The operations built on the paths: bulk hangups (`bulk`), the sweep of every live call
//! (`sweep`), and hangups scheduled for later (`scheduled`).

pub(crate) mod bulk;
pub(crate) mod scheduled;
pub(crate) mod sweep;
