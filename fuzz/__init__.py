"""Fuzz harnesses for kbproto (see ``fuzz/README.md``); not shipped."""
