"""Test support code that is not itself a test: the simulated OpenAI-compatible endpoint."""
