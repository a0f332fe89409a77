//! The network: the U-Net and the host kernels it runs on the `flex` backend.

pub mod host_ops;
pub mod model;
