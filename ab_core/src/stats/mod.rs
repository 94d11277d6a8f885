//! The statistics of the analysis, as `../shared`'s reference defines them and checked against
//! scipy fixtures in `tests/fixtures`.

pub mod dist;
pub mod moments;
pub mod multiple;
pub mod welch;

pub use moments::Moments;
pub use welch::{welch_test, WelchResult};
