//! Process memory from Linux `/proc`, and what its curve over time means; `refhunt watch`
//! is built on it.

pub mod curve;
pub mod export;
pub mod plot;
pub mod proc_text;
pub mod sampler;
