"""The HTTP engagement tracker: pixels and click redirects in, durable events out."""
