//! fewstep's own rewrites of the tract graph, applied when a plan is built,
//! where measurement showed tract's own operators were slower:
//!
//! - [`winograd`]: 3×3 stride-1 convolutions as Winograd F(2×2, 3×3)
//!   (kernel timing, transforms, executor, rewrite, tests: one file each);
//! - [`group_norm`]: GroupNormalization (+ a following SiLU) as one fused
//!   operator, registered in the ONNX parser;
//! - [`torch_group_norm`]: PyTorch's five-node export of a group norm
//!   turned back into one GroupNormalization before parsing.

pub mod group_norm;
pub mod torch_group_norm;
pub mod winograd;
