"""medes: grow a Chinese medical-ethics benchmark with LLM agents and turn it into alignment data."""

__version__ = "0.1.0"
