"""Shared dashboard components: score metadata, image grid, filters, charts, decisions, export."""
