"""The application: the CLI, the agent and registry processes, the embedded demo."""
