//! Simulated camera (placeholder: being written).
