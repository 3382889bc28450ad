"""aopkit_ollama (being written)."""
