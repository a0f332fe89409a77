//! The training algorithms: diffusion pretraining (the teacher), multistep
//! consistency training and distillation, progressive distillation, the
//! empirical aDDIM xvar measurement, and the optimiser they share.

pub mod consistency;
pub mod optim;
pub mod progressive;
pub mod train;
pub mod xvar;
