"""The run engine: experiment in, answers and journal out. Knows no screen: front ends subscribe to its events."""
