"""aopkit_gemini (being written)."""
