//! The `model.tar.gz` format as untrusted bytes: unpacking an archive
//! safely, and parsing `serving.properties`. The host's `package` module
//! builds a loadable model from these.

pub mod archive;
pub mod properties;
