//! WebAuthn relying-party verification. See the crate description.
