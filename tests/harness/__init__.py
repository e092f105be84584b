"""Real servers the tests start for themselves (PostgreSQL, MTAs): started, probed, torn down."""
