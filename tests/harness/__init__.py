"""Shared test machinery: the browser session, the site server, and the GPU kernel harness."""
