//! distill-harness: score a teacher and a distilled student on the same tasks and report what
//! the student keeps (accuracy retention) and what it saves.
//!
//! The binary (`src/main.rs`) reads as a list of steps: parse flags ([`cli`]), validate them
//! cheaply into a [`plan::RunPlan`], then [`run::execute`] the plan, which loads models through
//! [`models`], runs tasks from the `tasks` crate and writes results with the `reports` crate.

pub mod alloc;
pub mod cells;
pub mod cli;
pub mod error;
pub mod fidelity;
pub mod hub_data;
pub mod kernels;
pub mod labels;
pub mod lm;
pub mod logging;
pub mod merge;
pub mod models;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod report;
pub mod run;
pub mod shard;
pub mod sweep;
