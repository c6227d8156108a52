"""Deployments built from the portfolio file: one per enabled project."""
