"""The rewrite engine: find the top HTML and text parts, track links, insert pixels."""
