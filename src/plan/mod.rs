//! From a tree of files to the packages to build.

pub mod discover;

pub use discover::{discover, package_for_spec, DiscoverError, PackageSource};
