"""aopkit_dashscope (being written)."""
