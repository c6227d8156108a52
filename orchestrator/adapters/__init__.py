"""Everything that touches the outside: SQLite, git, GitHub, webhooks, the agent runtime, checks, files."""
