"""Loopback fake servers that speak the first-party providers' wire protocols (one module
each: ``openai``, ``openai_responses``, ``anthropic``, ``gemini``, ``dashscope``, ``ollama``),
on a shared base (:mod:`aopkit.testing.fakes.base`). Each checks requests the way its API does
and answers with the API's own bodies, streams and errors."""
