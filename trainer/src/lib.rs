//! The fewstep trainer (in progress).
