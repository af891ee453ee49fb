"""Site content written as markdown files (the question bank, the lab catalog) and its one
renderer: front matter is read and markdown is rendered and sanitized in content.markdown only.

A plain package, not a Django app: no models, nothing to install. Modules:

    markdown  front matter, rendering, and the sanitizer's allowlist
"""
