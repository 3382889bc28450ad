"""aopkit_anthropic (being written)."""
