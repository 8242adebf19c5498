"""What the tests share: import as tests.helpers.<module> (the repository root is on sys.path under pytest)."""
