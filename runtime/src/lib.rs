//! The fewstep runtime (in progress).
