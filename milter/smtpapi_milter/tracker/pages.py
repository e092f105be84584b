"""Pages the tracker's public listener answers with when it cannot do what a link asks."""

# A tampered, truncated or unknown token: the same page whatever the route, never a redirect.
NOT_FOUND_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Link not found</title></head>"
    b"<body><h1>This link is not valid</h1><p>It may have been copied incompletely. Please "
    b"use the link in the original message.</p></body></html>\n"
)
