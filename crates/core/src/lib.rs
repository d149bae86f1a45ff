//! The portable half of refhunt: the capture file the agent writes, the report the CLI builds
//! from it, and its rendering as text or JSON.
//!
//! Nothing here touches the OS or a Python process. Native addresses are turned into frames by
//! a [`report::Symbolizer`] that the caller supplies, so this crate is testable on plain data.

pub mod capture;
pub mod children;
pub mod gate;
pub mod holder;
pub mod html;
pub mod native;
pub mod numfmt;
pub mod report;
pub mod runtime;
pub mod sarif;
pub mod text;
pub mod verdict;
