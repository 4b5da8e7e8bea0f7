//! UDP receive (placeholder: being written).
