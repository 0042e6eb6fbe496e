//! Placeholder: the HTTP workloads bench comes next.

fn main() {}
