//! Pure logic of the ab_testing PostgreSQL extension. Nothing here touches PostgreSQL:
//! the extension crate reads arguments and rows, calls into this crate and returns rows.

pub mod analysis;
pub mod bandit;
pub mod batch;
pub mod breakdown;
pub mod bucketing;
pub mod definition;
pub mod error;
pub mod funnel;
pub mod impact;
pub mod layers;
pub mod names;
pub mod plot;
pub mod rollout;
pub mod source;
pub mod stats;
pub mod summary;
pub mod targeting;
#[cfg(test)]
mod test_rng;
pub mod timeline;
pub mod winner;

pub use error::{Error, ErrorKind, Result};
