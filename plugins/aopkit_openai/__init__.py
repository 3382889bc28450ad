"""aopkit_openai (being written)."""
