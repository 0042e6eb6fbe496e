//! Placeholder: W1–W5 on PostgreSQL (filled in by a later commit).

fn main() {}
