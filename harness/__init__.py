"""The test harness (not installed): real peers on 127.0.0.1, sample data, fixtures."""
