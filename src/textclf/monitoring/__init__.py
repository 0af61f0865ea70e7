"""Monitoring: what `textclf drift` reads (prediction logs, text files), the drift measures
(stats.py), accuracy estimated without labels (estimate.py), the report data (report.py)
and its page (page.py). A new drift measure goes in stats.py and is reported in report.py.

Imports the model, reporting and data wings and the shared modules.
"""
