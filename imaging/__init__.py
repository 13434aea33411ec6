"""Image I/O and compositing: pure decode, compose and encode functions (no HTTP, no Ray)."""
