"""infoscope core: the scoring engine (data sources, models, NTK, scores, run store, export, CLI).

House rule: nothing under ``core`` imports streamlit or plotly.
"""

__version__ = "0.1.0"
