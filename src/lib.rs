//! Packetary: a Git-driven build bot for packages. See DESIGN.md for the data flow.

pub mod config;
pub mod docker;
pub mod executor;
pub mod forge;
pub mod format;
pub mod git;
pub mod http;
pub mod model;
pub mod plan;
pub mod queue;
pub mod repos;
pub mod service;
pub mod spec;
pub mod store;
pub mod web;
