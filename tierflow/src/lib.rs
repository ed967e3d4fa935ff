//! The `tierflow` command's library: the whole pipeline in one process ([`pipeline`]) and what
//! `tierflow dev` shows while it runs ([`status`]).

pub mod pipeline;
pub mod status;
