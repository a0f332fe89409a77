//! The optimiser of every training run: AdamW over the U-Net. Its own module
//! so that checkpoints (which store its state) and the trainers (which step
//! it) both depend on it rather than on each other.

use crate::config::TrainConfig;
use crate::network::model::UNet;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig};
use burn::tensor::backend::AutodiffBackend;

/// The optimiser type.
pub type Optim<B> = OptimizerAdaptor<AdamW, UNet<B>, B>;

/// Builds the AdamW optimiser.
pub fn optimizer<B: AutodiffBackend>(train: &TrainConfig) -> Optim<B> {
    AdamWConfig::new()
        .with_weight_decay(train.weight_decay as f32)
        .init::<B, UNet<B>>()
}
