//! The statistics of the analysis, as their published references define them, checked against
//! scipy and statsmodels fixtures in `tests/fixtures`.

pub mod bayes;
pub mod cuped;
pub mod dist;
pub mod moments;
pub mod multiple;
pub mod power;
pub mod proportion;
pub mod regression;
pub mod sequential;
pub mod srm;
pub mod welch;

pub use moments::Moments;
pub use welch::{welch_test, WelchResult};
