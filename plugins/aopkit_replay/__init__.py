"""aopkit_replay (being written)."""
