"""Reports read only stored runs and published numbers: summaries, tables, figures."""
