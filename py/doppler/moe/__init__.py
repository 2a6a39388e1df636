"""Mixture-of-Experts support: expert-cache policies and routing traces for the pager."""
