//! Benchmark scenarios (B1–B5); see `kubetwin-bench`.
