"""Servers the tests and benchmarks own: the stand-in Ollama (also vLLM and llama-server) and a real llama.cpp server,
each also runnable as a script in a child process (standard library only on that side)."""
