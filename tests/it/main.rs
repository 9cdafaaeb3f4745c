//! The integration tests, in one test binary (one link instead of one per file). Each file
//! of this directory is a module, so a test is named `module::test`: `cargo test --test it
//! serve_queue::` runs one file's tests. They share one process and run in parallel threads:
//! process-wide state (environment variables, the current directory, a global tracing
//! subscriber) is never changed here — a value a `packetary` child needs goes on its
//! `Command` instead. (`hostile_serve` raises the open-file limit to the hard limit, which
//! only gives the others more room.)

// Helpers shared by the tests (also included by the benches through `#[path]`).
mod common;
mod gerrit_common;
mod plan_common;
mod serve_common;
mod swarm_build;
mod swarm_common;

mod build_default_target;
mod build_docker;
mod build_mock;
mod build_reap;
mod build_trust;
mod build_url_repo;
mod cli_errors;
mod cli_summary;
mod failing_specs;
mod gerrit_e2e;
mod gerrit_stream;
mod git_credentials;
mod hostile_serve;
mod hostile_spec;
mod images_push;
mod images_recipe;
mod plan_bad_input;
mod plan_learned;
mod plan_mirror;
mod plan_select;
mod plan_specs;
mod quota;
mod rebuild;
mod rebuild_release;
mod rebuild_release_hostile;
mod repos;
mod repos_index_confined;
mod repos_serve;
mod repos_stage;
mod serve_crash;
mod serve_e2e;
mod serve_github;
mod serve_learned;
mod serve_planner;
mod serve_queue;
mod serve_reuse;
mod serve_webhooks;
mod spec_cancel;
mod store_migrate;
mod swarm_mock;
mod web_change_page;
mod web_commit_page;
mod web_pages;
mod web_release_access;
